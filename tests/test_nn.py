"""Networks, SAEs, loss weighting, targets and force paths of pykinml.nn / pykinml.tasks on the demo database.

References are independent of the code under test: closed-form least squares (numpy pinv/lstsq, normal
equations), networks evaluated layer by layer in numpy, autograd through the AEV and central finite
differences of the energy (float64) for the cached-Jacobian forces, and per-level selections for delta targets.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from pykinml.aev import AEVParams
from pykinml.data.module import PotentialDataModule
from pykinml.data.targets import TargetSpec, build_targets
from pykinml.data.training import load_training_data
from pykinml.db import open_engine
from pykinml.db.query import select_structures
from pykinml.demo import DEMO_DB
from pykinml.errors import PykinmlError
from pykinml.nn import ChainedPotential, ElementNetworks, element_counts, fit_sae, structure_sums
from pykinml.tasks import DeltaTask, MultiFidelityTask, SingleFidelityTask, task_class
from pykinml.tasks.losses import TaskWeights, squared_error
from pykinml.tasks.metrics import REPORTS, ErrorMetrics

torch.set_num_threads(1)

F64 = torch.float64
LEVELS = {"single": ["gfn2"], "delta": ["gfn1", "gfn2"], "multi": ["gfn1", "gfn2"]}


def config(force_mode: str = "jacobian", weighting: str = "uncertainty", activations="celu") -> dict:
    return {
        "model": {"forces": True, "force_mode": force_mode, "neurons": [16, 8], "activations": activations, "bias": True},
        "loss": {"weighting": weighting, "force_weight": 0.5, "energy": "per_structure", "kind": "mse"},
        "optim": {"name": "adam", "lr": 1e-3},
        "scheduler": {"name": "none"},
    }


@pytest.fixture(scope="module")
def engine():
    engine = open_engine(DEMO_DB)
    yield engine
    engine.dispose()


def load(engine, fidelity: str):
    levels = LEVELS[fidelity]
    specs = task_class(fidelity).target_specs(levels)
    return load_training_data(engine, levels, specs, fidelity, None, "default", [0.8, 0.1, 0.1], 0, True)


def mixed_rows(data, per_name: int = 1) -> list[int]:
    """Selection positions of ``per_name`` structures of every molecule of the demo database."""
    names = data.selection.names
    rows = [int(r) for name in np.unique(names) for r in np.nonzero(names == name)[0][:per_name]]
    return sorted(rows)


# --- 1. self atomic energies -----------------------------------------------------------------------------


def test_fit_sae_recovers_known_energies_and_ignores_nan():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 7, size=(40, 4)).astype(float)
    assert np.linalg.matrix_rank(counts) == 4
    sae_true = np.array([-13.6, -1029.8, -1485.3, -2041.9])
    energies = counts @ sae_true
    energies[7] = np.nan  # a structure without this label: must be skipped, not poison the fit
    np.testing.assert_allclose(fit_sae(counts, energies), sae_true, rtol=1e-12, atol=1e-9)
    with pytest.raises(PykinmlError):
        fit_sae(counts, np.full(40, np.nan))


def test_fit_sae_rank_deficient_is_minimum_norm_exact_fit():
    # Two compositions of three elements (rank 2), exact energies: infinitely many exact fits.
    counts = np.array([[4.0, 1.0, 0.0], [4.0, 1.0, 0.0], [2.0, 0.0, 1.0], [2.0, 0.0, 1.0]])
    energies = np.array([-40.5, -40.5, -76.4, -76.4])
    sae = fit_sae(counts, energies)
    np.testing.assert_allclose(counts @ sae, energies, rtol=1e-12)
    np.testing.assert_allclose(sae, np.linalg.pinv(counts) @ energies, rtol=1e-10, atol=1e-12)
    # An element absent from every structure gets 0.
    with_absent = np.hstack([counts, np.zeros((4, 1))])
    fitted = fit_sae(with_absent, energies)
    assert fitted[-1] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(fitted[:3], sae, rtol=1e-10, atol=1e-12)


def test_element_counts():
    species = np.array([0, 1, 1, 1, 1, 2, 0, 0])
    offsets = np.array([0, 5, 5, 8])  # an empty structure in the middle
    np.testing.assert_array_equal(element_counts(species, offsets, 3), [[1, 4, 0], [0, 0, 0], [2, 0, 1]])


def test_training_data_fit_sae_on_demo(engine):
    data = load(engine, "multi")
    numbers = AEVParams.original(data.elements()).atomic_numbers  # H, C, N, O
    sae = data.fit_sae(numbers)
    assert sae.shape == (2, len(numbers))
    train = data.selection.subset(data.rows["train"])
    index = {z: i for i, z in enumerate(numbers)}
    counts = element_counts(np.array([index[z] for z in train.numbers]), train.offsets, len(numbers))
    for t, level in enumerate(["gfn1", "gfn2"]):
        energies = train.energies[level]
        residual = energies - counts @ sae[t]
        # The least-squares normal equations hold: residuals are orthogonal to every count column.
        assert np.abs(counts.T @ residual).max() < 1e-8 * np.abs(counts.T @ energies).max()
        assert abs(residual.mean()) < 0.01 * energies.std()
        assert residual.std() < 0.05 * energies.std()
    # Columns follow the order of the atomic numbers given; an element absent from the data gets 0.
    order = [numbers[i] for i in (2, 0, 3, 1)] + [16]
    permuted = data.fit_sae(order)
    np.testing.assert_allclose(permuted[:, :4], sae[:, [2, 0, 3, 1]], rtol=1e-9)
    np.testing.assert_allclose(permuted[:, 4], 0.0, atol=1e-9)


# --- 2. per-element networks and activations ---------------------------------------------------------------

REFERENCE_ACTIVATIONS = {
    "gaussian": lambda x: np.exp(-x * x),
    "celu": lambda x: np.maximum(x, 0.0) + np.minimum(0.0, 0.1 * np.expm1(x / 0.1)),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
}


def numpy_mlp(network: nn.Sequential, x: np.ndarray, names: list[str]) -> np.ndarray:
    """The network evaluated layer by layer in numpy with the closed-form activations."""
    linears = [m for m in network if isinstance(m, nn.Linear)]
    assert len(linears) == len(names) + 1
    for layer, name in zip(linears[:-1], names):
        x = REFERENCE_ACTIVATIONS[name](x @ layer.weight.detach().numpy().T + layer.bias.detach().numpy())
    last = linears[-1]
    return (x @ last.weight.detach().numpy().T + last.bias.detach().numpy())[:, 0]


def test_element_networks_route_atoms_to_their_element():
    torch.manual_seed(0)
    networks = ElementNetworks(3, 6, [5, 4], "tanh").double()
    species = torch.tensor([2, 0, 0, 2, 1, 0, 2, 2, 1])
    features = torch.randn(9, 6, dtype=F64)
    out = networks(features, species)
    assert out.shape == (9,)
    for element in range(3):
        rows = torch.nonzero(species == element).flatten()
        expected = networks.networks[element](features[rows]).flatten()
        torch.testing.assert_close(out[rows], expected, rtol=0, atol=0)
    # The three networks differ, so a wrong routing would show.
    assert not torch.allclose(networks.networks[0](features), networks.networks[1](features))
    # An element with no atom in the batch is fine; every atom still gets its own network's energy.
    only = torch.zeros(9, dtype=torch.int64)
    torch.testing.assert_close(networks(features, only), networks.networks[0](features).flatten())
    # ... and the absent elements' networks still get (zero) gradients: under DDP a parameter without a
    # gradient on one rank makes the all-reduce fail or hang.
    networks(features, only).sum().backward()
    for element in (1, 2):
        for parameter in networks.networks[element].parameters():
            assert parameter.grad is not None and not parameter.grad.any()


@pytest.mark.parametrize("name", sorted(REFERENCE_ACTIVATIONS))
def test_activations_by_name(name):
    torch.manual_seed(1)
    networks = ElementNetworks(2, 5, [7, 3], name.upper() if name == "tanh" else name).double()
    features = 1.5 * torch.randn(11, 5, dtype=F64)
    species = torch.tensor([0, 1] * 5 + [1])
    out = networks(features, species).detach().numpy()
    for element in range(2):
        rows = (species == element).numpy()
        expected = numpy_mlp(networks.networks[element], features.numpy()[rows], [name, name])
        np.testing.assert_allclose(out[rows], expected, rtol=1e-12, atol=1e-12)


def test_per_layer_activations_and_errors():
    torch.manual_seed(2)
    networks = ElementNetworks(1, 4, [6, 5], ["gaussian", "silu"]).double()
    features = torch.randn(8, 4, dtype=F64)
    out = networks(features, torch.zeros(8, dtype=torch.int64)).detach().numpy()
    np.testing.assert_allclose(out, numpy_mlp(networks.networks[0], features.numpy(), ["gaussian", "silu"]), rtol=1e-12)
    one = ElementNetworks(1, 4, [6, 5], ["softplus"])  # one name serves every layer
    assert [type(m).__name__ for m in one.networks[0]] == ["Linear", "Softplus", "Linear", "Softplus", "Linear"]
    with pytest.raises(PykinmlError, match="relu"):
        ElementNetworks(2, 4, [6, 5], "relu")
    with pytest.raises(PykinmlError, match="3 entries"):
        ElementNetworks(2, 4, [6, 5], ["celu", "tanh", "silu"])
    with pytest.raises(PykinmlError):
        ElementNetworks(2, 4, [6, 5], ["celu", "nope"])


# --- 3. chained potential --------------------------------------------------------------------------------


def test_chained_potential_levels_and_sae_sums():
    torch.manual_seed(3)
    n_el, width = 3, 10
    potential = ChainedPotential(2, n_el, width, [8, 4], "celu").double()
    species = torch.tensor([0, 1, 1, 2, 0, 0, 2, 1])
    owner = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    aev = torch.randn(8, width, dtype=F64)

    standalone = ElementNetworks(n_el, width, [8, 4], "celu").double()
    standalone.load_state_dict(potential.levels[0].state_dict())
    e0 = standalone(aev, species)
    atomic = potential.atomic(aev, species)
    assert atomic.shape == (2, 8)
    torch.testing.assert_close(atomic[0], e0, rtol=0, atol=0)

    # Level 1 by hand: e1_i = e0_i + NN1_{Z_i}([G_i, e0_i]).
    correction = torch.stack([
        potential.levels[1].networks[int(z)](torch.cat([aev[i], e0[i : i + 1]]))[0] for i, z in enumerate(species)
    ])
    torch.testing.assert_close(atomic[1], e0 + correction, rtol=1e-12, atol=1e-12)
    assert correction.abs().min() > 0  # the second level does contribute

    energies = potential(aev, species, owner, 3)
    expected = np.array([[a[owner.numpy() == k].sum() for k in range(3)] for a in atomic.detach().numpy()])
    np.testing.assert_allclose(energies.detach().numpy(), expected, rtol=1e-12)

    sae = np.array([[-13.587654321, -1029.86312345, -2041.84011111], [-13.6, -1030.1, -2042.3]])
    potential.sae.copy_(torch.tensor(sae))
    totals = potential.sae_energies(species, owner, 3)
    assert totals.dtype == F64
    expected = np.array([[row[species.numpy()[owner.numpy() == k]].sum() for k in range(3)] for row in sae])
    np.testing.assert_allclose(totals.numpy(), expected, rtol=1e-15)
    # structure_sums leaves a structure without atoms at 0
    torch.testing.assert_close(structure_sums(torch.ones(3, dtype=F64), torch.tensor([0, 0, 2]), 4),
                               torch.tensor([2.0, 0.0, 1.0, 0.0], dtype=F64))


# --- 4. forces: cached Jacobian vs autograd through the AEV vs finite differences (float64) -----------------


@pytest.fixture(scope="module")
def force_setup(engine, tmp_path_factory):
    """Per fidelity: the task, and one mixed batch from the Jacobian cache and one for autograd (float64)."""
    cache = tmp_path_factory.mktemp("aev-cache")
    out = {}
    for fidelity in ("single", "delta", "multi"):
        data = load(engine, fidelity)
        params = AEVParams.original(data.elements())
        rows = mixed_rows(data, per_name=2)
        batches = {}
        for mode in ("jacobian", "autograd"):
            dm = PotentialDataModule(data, params, forces=True, force_mode=mode, dtype="float64", batch_size=16,
                                     cache_dir=str(cache), progress=False)
            dm.prepare_data()
            dm.setup()
            batches[mode] = dm.collate(rows)
        torch.manual_seed(4)
        task = task_class(fidelity)(config(), params.to_dict(), LEVELS[fidelity]).double()
        task.set_sae(data.fit_sae(params.atomic_numbers))
        out[fidelity] = (task, batches, data)
    return out


@pytest.mark.parametrize("fidelity", ["single", "delta", "multi"])
def test_forces_jacobian_equal_autograd_and_finite_differences(force_setup, fidelity):
    task, batches, data = force_setup[fidelity]
    cached, direct = batches["jacobian"], batches["autograd"]
    assert cached.aev is not None and cached.jacobian is not None and direct.structures is not None
    assert cached.aev.dtype == F64 and direct.structures.positions.dtype == F64
    assert len(set(data.selection.names[cached.rows])) == 6  # every molecule of the demo database
    torch.testing.assert_close(cached.species, direct.species)

    e_jac, f_jac = task.predict_batch(cached, True)  # cached AEVs and Jacobian rows
    e_auto, f_auto = task.predict_batch(direct, True)
    n_out = 2 if fidelity == "multi" else 1
    assert e_jac.shape == (n_out, len(cached)) and f_jac.shape == (n_out, cached.species.numel(), 3)
    assert e_jac.dtype == F64 and f_jac.dtype == F64
    torch.testing.assert_close(e_jac, e_auto, rtol=1e-12, atol=1e-9)
    scale = f_auto.abs().max()
    assert scale > 1e-3  # forces are not trivially zero
    torch.testing.assert_close(f_jac, f_auto, rtol=1e-9, atol=1e-9 * float(scale))
    # Each structure's forces sum to zero (translation invariance).
    net = torch.zeros(n_out, len(cached), 3, dtype=F64).index_add(1, cached.owner, f_jac)
    assert net.abs().max() < 1e-9 * float(scale)

    # Central differences of the network energy (SAE sums are constant) w.r.t. a few atoms' positions.
    structures = direct.structures
    sae = task.model.sae_energies(direct.species, direct.owner, len(direct))

    def energy(positions: torch.Tensor) -> torch.Tensor:
        moved = dataclasses.replace(direct, structures=dataclasses.replace(structures, positions=positions))
        with torch.no_grad():
            energies, _ = task.predict_batch(moved, False)
        return (energies - sae).sum(dim=1)  # (T,)

    h = 1e-5
    offsets = structures.offsets.tolist()
    atoms = [offsets[-2] + 1, offsets[len(offsets) // 2], 0]  # atoms of different molecules
    for atom in atoms:
        for c in range(3):
            plus, minus = structures.positions.clone(), structures.positions.clone()
            plus[atom, c] += h
            minus[atom, c] -= h
            numeric = -(energy(plus) - energy(minus)) / (2 * h)
            torch.testing.assert_close(f_jac[:, atom, c], numeric, rtol=1e-6, atol=1e-7)


# --- 5. loss weighting -----------------------------------------------------------------------------------


def test_task_weights_uncertainty():
    weights = TaskWeights(2, True, "uncertainty", 0.5)
    assert weights.log_variance.shape == (4,)
    torch.testing.assert_close(weights.log_variance.detach(), torch.zeros(4))
    s = torch.tensor([0.3, -0.7, 1.1, 0.2])
    with torch.no_grad():
        weights.log_variance.copy_(s)
    losses = {(0, "energy"): 2.0, (0, "forces"): 0.5, (1, "energy"): 3.0, (1, "forces"): 1.5}
    terms = {key: torch.tensor(value, requires_grad=True) for key, value in losses.items()}
    total = weights(terms)
    index = {(0, "energy"): 0, (0, "forces"): 1, (1, "energy"): 2, (1, "forces"): 3}
    expected = sum(math.exp(-float(s[index[k]])) * v + float(s[index[k]]) for k, v in losses.items())
    assert float(total.detach()) == pytest.approx(expected, rel=1e-6)
    total.backward()
    # d/ds (e^{-s} L + s) = 1 - e^{-s} L
    expected_grad = [1 - math.exp(-float(s[index[k]])) * losses[k] for k in index]
    np.testing.assert_allclose(weights.log_variance.grad.numpy(), expected_grad, rtol=1e-5)

    # A term without labels contributes 0 but keeps its s in the graph with a zero gradient.
    weights.log_variance.grad = None
    partial = {(0, "energy"): torch.tensor(2.0), (0, "forces"): None, (1, "energy"): None, (1, "forces"): torch.tensor(1.5)}
    total = weights(partial)
    expected = math.exp(-0.3) * 2.0 + 0.3 + math.exp(-0.2) * 1.5 + 0.2
    assert float(total.detach()) == pytest.approx(expected, rel=1e-6)
    total.backward()
    grad = weights.log_variance.grad
    assert grad is not None
    assert float(grad[1]) == 0.0 and float(grad[2]) == 0.0
    assert float(grad[0]) == pytest.approx(1 - math.exp(-0.3) * 2.0, rel=1e-5)


def test_task_weights_fixed_and_errors():
    weights = TaskWeights(2, True, "fixed", 0.3)
    assert weights.log_variance is None and list(weights.parameters()) == []
    terms = {(0, "energy"): torch.tensor(2.0), (0, "forces"): torch.tensor(5.0),
             (1, "energy"): torch.tensor(1.0), (1, "forces"): None}
    assert float(weights(terms)) == pytest.approx(0.7 * 2.0 + 0.3 * 5.0 + 0.7 * 1.0)
    no_forces = TaskWeights(1, False, "fixed", 0.3)
    assert float(no_forces({(0, "energy"): torch.tensor(2.0)})) == pytest.approx(2.0)
    with pytest.raises(PykinmlError):
        weights({(0, "energy"): None, (1, "forces"): None})
    with pytest.raises(PykinmlError, match="weighting"):
        TaskWeights(1, True, "learned", 0.5)
    for bad in (-0.1, 1.5):
        with pytest.raises(PykinmlError, match="force_weight"):
            TaskWeights(1, True, "fixed", bad)


def test_squared_error_mask_and_scale():
    prediction = torch.tensor([1.0, 2.0, 4.0, 8.0])
    target = torch.tensor([0.0, 2.0, 1.0, 100.0])
    mask = torch.tensor([True, True, True, False])
    assert float(squared_error(prediction, target, mask)) == pytest.approx((1 + 0 + 9) / 3)
    scale = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert float(squared_error(prediction, target, mask, scale)) == pytest.approx((1 + 0 + 1) / 3)
    assert squared_error(prediction, target, torch.zeros(4, dtype=torch.bool)) is None
    # Per-atom rows of forces: the mean over every component of the rows kept; a NaN in a row left out
    # changes neither the value nor the gradient.
    forces = torch.tensor([[1.0, 2.0, 3.0], [float("nan"), 0.0, 0.0], [0.0, 0.0, 2.0]], requires_grad=True)
    rows = torch.tensor([True, False, True])
    value = squared_error(forces, torch.zeros(3, 3), rows)
    assert float(value.detach()) == pytest.approx((1 + 4 + 9 + 4) / 6)
    (gradient,) = torch.autograd.grad(value, forces)
    assert torch.equal(gradient, torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0]]) * 2 / 6)


# --- 6. training steps ------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("weighting", ["uncertainty", "fixed"])
def test_training_steps_decrease_loss(engine, tmp_path, weighting):
    data = load(engine, "single")
    params = AEVParams.original(data.elements())
    dm = PotentialDataModule(data, params, forces=True, batch_size=32, cache_dir=str(tmp_path), progress=False)
    dm.prepare_data()
    dm.setup()
    batch = dm.collate(data.rows["train"][::15].tolist())
    torch.manual_seed(0)
    cfg = config(weighting=weighting)
    cfg["optim"]["lr"] = 1e-2
    task = SingleFidelityTask(cfg, params.to_dict(), ["gfn2"])
    task.set_sae(data.fit_sae(params.atomic_numbers))
    optimizer = task.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    before = [p.detach().clone() for p in task.model.parameters()]
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = task.training_step(batch, 0)
        losses.append(float(loss.detach()))
        loss.backward()
        optimizer.step()
    final = float(task.training_step(batch, 0).detach())
    assert all(math.isfinite(v) for v in losses)
    assert final < 0.5 * losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, task.model.parameters()))
    # The training metrics saw the batch's energies and forces.
    values = task.metrics["train_errors"].compute()
    assert values["gfn2/energy_rmse_ev"] > 0 and values["gfn2/force_rmse_ev_a"] > 0


@pytest.mark.parametrize("kernels", [True, False], ids=["numba", "torch"])
def test_error_metrics_equal_numpy_over_masked_batches(kernels):
    """MAE and RMSE of energies (per structure and per atom), forces and stress, in every reported unit, over
    two batches whose masks leave labels out, equal numpy over the labelled values, summed by the numba loop
    (CPU) and by torch operations (other devices); an output that never saw a label reports nothing."""
    rng = np.random.default_rng(5)
    metrics = ErrorMetrics(["low", "high"], kernels=kernels)
    kept: dict[str, list] = {"energy": [], "atom": [], "force": [], "stress": []}
    for structures, atoms in ((4, 13), (3, 9)):
        energy, target = rng.normal(size=structures), rng.normal(size=structures)
        natoms = rng.integers(1, 6, size=structures).astype(float)
        mask = np.arange(structures) != 1
        forces, target_forces = rng.normal(size=(atoms, 3)).astype(np.float32), rng.normal(size=(atoms, 3)).astype(np.float32)
        force_mask = rng.random(atoms) < 0.7
        stress, target_stress = rng.normal(size=(structures, 3, 3)) * 1e-3, rng.normal(size=(structures, 3, 3)) * 1e-3
        stress_mask = np.arange(structures) != 0
        t = torch.from_numpy
        metrics.update(0, t(energy), t(target), t(natoms), t(mask), t(forces), t(target_forces), t(force_mask),
                       t(stress), t(target_stress), t(stress_mask))
        metrics.update(1, t(energy), t(target), t(natoms), t(np.zeros(structures, bool)))
        kept["energy"].append((energy - target)[mask])
        kept["atom"].append(((energy - target) / natoms)[mask])
        kept["force"].append((forces.astype(float) - target_forces)[force_mask].ravel())
        kept["stress"].append((stress - target_stress)[stress_mask].ravel())
    errors = {group: np.concatenate(parts) for group, parts in kept.items()}
    values = metrics.compute()
    expected = {}
    for report, (source, factor) in REPORTS.items():
        group, kind = source.split("_")
        error = errors[group]
        expected[f"low/{report}"] = factor * (np.abs(error).mean() if kind == "mae" else np.sqrt((error**2).mean()))
    assert values.keys() == expected.keys()  # nothing for "high": it never had a label
    for name, value in expected.items():
        assert values[name] == pytest.approx(value, rel=1e-6), name
    metrics.reset()
    assert metrics.compute() == {}


# --- 7. targets ---------------------------------------------------------------------------------------------


def test_delta_targets_are_level_differences(engine):
    data = load(engine, "delta")
    assert [s.name for s in data.specs] == ["gfn2-gfn1"]
    selection = data.selection
    # Independent reference: each level selected on its own, matched by structure id.
    low = select_structures(engine, levels=["gfn1"], split="default", forces=True)
    high = select_structures(engine, levels=["gfn2"], split="default", forces=True)
    assert np.array_equal(low.ids, selection.ids) and np.array_equal(high.ids, selection.ids)
    targets = data.targets
    assert targets.energies.shape == (1, len(selection)) and targets.forces.shape == (1, selection.offsets[-1], 3)
    np.testing.assert_allclose(targets.energies[0], high.energies["gfn2"] - low.energies["gfn1"], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(targets.forces[0], high.forces["gfn2"] - low.forces["gfn1"], rtol=1e-12, atol=1e-9)
    assert targets.energy_mask.all() and targets.force_mask.all()
    assert np.abs(targets.energies[0]).max() > 0.1 and np.abs(targets.forces[0]).max() > 0.01
    assert np.abs(targets.energies[0]).max() < np.abs(high.energies["gfn2"]).max()  # a difference, not a level


def test_targets_masks_with_missing_labels(engine):
    data = load(engine, "multi")
    selection = data.selection.subset(np.arange(6))
    no_low = {**selection.has_energy, "gfn1": np.array([True, False, True, True, True, True])}
    no_low_forces = {**selection.has_forces, "gfn2": np.array([True, True, False, True, True, True])}
    energies = {**selection.energies, "gfn1": np.where(no_low["gfn1"], selection.energies["gfn1"], np.nan)}
    selection = dataclasses.replace(selection, has_energy=no_low, has_forces=no_low_forces, energies=energies)
    specs = [TargetSpec("gfn2-gfn1", "gfn2", minus="gfn1"), TargetSpec("gfn1", "gfn1")]
    targets = build_targets(selection, specs, forces=True)
    np.testing.assert_array_equal(targets.energy_mask, [[True, False, True, True, True, True],
                                                        [True, False, True, True, True, True]])
    np.testing.assert_array_equal(targets.force_mask, [[True, False, False, True, True, True],
                                                       [True, False, True, True, True, True]])
    assert np.isnan(targets.energies[:, 1]).all() and np.isfinite(targets.energies[:, [0, 2]]).all()
    no_forces = build_targets(selection, specs, forces=False)
    assert not no_forces.force_mask.any() and np.isnan(no_forces.forces).all()


def test_task_classes_and_level_checks():
    assert task_class("single") is SingleFidelityTask
    assert task_class("delta") is DeltaTask and task_class("multi") is MultiFidelityTask
    with pytest.raises(PykinmlError):
        task_class("triple")
    with pytest.raises(PykinmlError):
        SingleFidelityTask.target_specs(["gfn1", "gfn2"])
    with pytest.raises(PykinmlError):
        DeltaTask.target_specs(["gfn2"])
    with pytest.raises(PykinmlError):
        MultiFidelityTask.target_specs(["gfn2"])
    assert DeltaTask.target_specs(["gfn1", "gfn2"]) == [TargetSpec("gfn2-gfn1", "gfn2", "gfn1")]
    params = AEVParams.original(["H", "C", "N", "O"])
    multi = MultiFidelityTask(config(), params.to_dict(), ["gfn1", "gfn2"])
    assert multi.model.n_levels == 2 and multi.model.levels[1].input_size == params.length + 1
    delta = DeltaTask(config(), params.to_dict(), ["gfn1", "gfn2"])
    assert delta.model.n_levels == 1
    with pytest.raises(PykinmlError):
        delta.set_sae(np.zeros((2, 4)))
