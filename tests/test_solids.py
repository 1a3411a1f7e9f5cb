"""Periodic solids: training on energies, forces and stress of real EMT copper cells (ASE's EMT calculator),
the training path's stress checked against finite differences of its own energy under strain (float64), and
a trained model's predictions on a cell and its 2x2x2 replica (energy x8, same stress, forces repeated)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from pykinml.cli.db import main as db_main
from pykinml.cli.train import main as train_main
from pykinml.predict import load_model
from pykinml.units import EV_A3_GPA

from .checks import user_error

torch.set_num_threads(1)


def emt_cells(count: int, seed: int = 0) -> list:
    """Strained, rattled fcc Cu cells (8 atoms) with EMT energy, forces and stress (ASE's sign, eV/Å³)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        strain = np.eye(3) + rng.normal(0.0, 0.02, (3, 3))
        atoms.set_cell(atoms.cell.array @ (0.5 * (strain + strain.T)), scale_atoms=True)
        atoms.rattle(0.05, seed=seed * 1000 + i)
        atoms.calc = EMT()
        energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
        atoms.calc = None
        atoms.info["emt_energy"], atoms.info["emt_stress"] = energy, stress
        atoms.arrays["emt_forces"] = forces
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def copper(tmp_path_factory):
    """A pykinml database of 60 EMT copper cells, imported from extxyz as a user would."""
    path = tmp_path_factory.mktemp("copper")
    ase.io.write(path / "cu.extxyz", emt_cells(60))
    assert db_main(["import", str(path / "cu.extxyz"), "--db", str(path / "cu.db"), "--name", "cu",
                    "--level", "emt=emt_energy,emt_forces,emt_stress"]) == 0
    return path


SOLID = ["data=database", "data.levels=[emt]", "model.stress=true", "model.force_mode=autograd", "model.neurons=[16]",
         "loss.energy=per_atom", "trainer.progress_bar=false", "data.batch_size=8"]


@pytest.fixture(scope="module")
def trained(copper):
    """A short run on energies, forces and stress."""
    code = train_main([*SOLID, f"data.db={copper / 'cu.db'}", f"run_dir={copper / 'run'}", f"cache_dir={copper / 'cache'}",
                       "trainer.max_epochs=12"])
    assert code == 0
    return copper / "run"


def test_training_on_stress_reports_stress_errors_that_fall(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    for split in ("val", "test"):
        assert metrics[split]["emt/stress_mae_gpa"] > 0 and np.isfinite(metrics[split]["emt/stress_rmse_gpa"])
    rows = [line.split(",") for line in (trained / "logs" / "metrics.csv").read_text().splitlines()]
    column = rows[0].index("val/emt/stress_rmse_gpa")
    values = [float(row[column]) for row in rows[1:] if len(row) > column and row[column]]
    assert len(values) >= 10 and values[-1] < 0.7 * values[0], values  # training on stress lowers its error


def _trained_task(run):
    """The task of ``run``'s best checkpoint, in float64."""
    from pykinml.checkpoints import load_checkpoint
    from pykinml.tasks.fidelity import task_class

    checkpoint = load_checkpoint(str(run / "checkpoints" / "best.ckpt"), "ckpt")
    info = checkpoint["pykinml"]
    task = task_class(info["fidelity"])(info["config"], info["aev"], info["levels"])
    task.load_state_dict(checkpoint["state_dict"], strict=False)
    return task.double()


def test_training_stress_is_the_strain_derivative_of_the_energy(trained, copper):
    """The stress the loss sees (the task's autograd through the AEV under a strain) against central finite
    differences of the task's own energy, in float64: σ_ij = (1/V) ∂E/∂ε_ij for a symmetric strain."""
    from pykinml.aev.computer import pack_atoms
    from pykinml.data.batches import Batch, owner_of

    task = _trained_task(trained)
    atoms = emt_cells(1, seed=7)[0]

    def batch_of(frame) -> Batch:
        structures = pack_atoms(task.params, [frame], dtype=torch.float64)
        n = len(frame)
        return Batch(rows=np.zeros(1, np.int64), ids=np.zeros(1, np.int64), species=structures.species,
                     owner=owner_of(structures.offsets), natoms=torch.tensor([n]), energies=torch.zeros(1, 1),
                     energy_mask=torch.ones(1, 1, dtype=torch.bool), forces=None, force_mask=None, structures=structures)

    def energy(frame) -> float:
        residual, _, _ = task._forward(batch_of(frame), False, False, False)
        return float(residual[0, 0].detach())

    _, _, stress = task._forward(batch_of(atoms), True, True, False)
    volume, h = atoms.get_volume(), 1e-5
    expected = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            values = []
            for sign in (1, -1):
                strain = np.zeros((3, 3))
                strain[i, j] += sign * h / 2
                strain[j, i] += sign * h / 2
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
                values.append(energy(strained))
            expected[i, j] = (values[0] - values[1]) / (2 * h) / volume
    np.testing.assert_allclose(stress[0, 0].detach().numpy(), expected, atol=1e-8)
    assert np.abs(expected).max() * EV_A3_GPA > 0.01  # a strained cell: the check has teeth


def test_a_cell_and_its_2x2x2_replica_agree(trained):
    """Energy is extensive (x8), stress intensive (equal), forces repeat and sum to zero, as physics requires."""
    model = load_model(trained / "checkpoints" / "best.ckpt", dtype="float64")
    cell = emt_cells(1, seed=11)[0]
    replica = cell.repeat((2, 2, 2))
    out = model.predict([cell, replica], stress=True)
    np.testing.assert_allclose(out.energies[0, 1], 8 * out.energies[0, 0], rtol=1e-10)
    np.testing.assert_allclose(out.stress[0, 1], out.stress[0, 0], atol=1e-10)
    cell_forces, replica_forces = out.forces[0][0], out.forces[1][0]  # per frame: (T, n, 3)
    np.testing.assert_allclose(replica_forces.reshape(8, len(cell), 3), np.broadcast_to(cell_forces, (8, len(cell), 3)),
                               atol=1e-10)
    np.testing.assert_allclose(replica_forces.sum(axis=0), 0.0, atol=1e-9)


def _task_and_batches(copper, run, cache_dir):
    """The trained task in float64, and one batch of every copper cell from the AEV cache (Jacobian rows) and
    from the packed geometries (autograd through the AEV), both through the data module training uses."""
    from pykinml.data.module import PotentialDataModule
    from pykinml.data.training import load_training_data
    from pykinml.db import open_engine

    task = _trained_task(run)
    data = load_training_data(open_engine(copper / "cu.db"), ["emt"], task.specs, "single", None, "default",
                              [0.8, 0.1, 0.1], 0, True, True)
    batches = {}
    for mode in ("jacobian", "autograd"):
        module = PotentialDataModule(data, task.params, forces=True, force_mode=mode, dtype="float64",
                                     cache_dir=str(cache_dir), progress=False, stress=True)
        module.prepare_data()
        module.setup("fit")
        batches[mode] = module.collate(np.arange(len(data.selection)))
    return task, batches


def test_cached_jacobian_forces_and_stress_equal_autograd_through_the_aev(trained, copper, tmp_path):
    """The virial from the cached pair rows (Σ_p r_p ⊗ ∂E/∂r_p, periodic images included: these 8-atom cells are
    3.6 Å wide, so an atom's own images are its neighbours) against autograd through the AEV under a strain."""
    task, batches = _task_and_batches(copper, trained, tmp_path / "cache")
    assert batches["jacobian"].structures is None and batches["autograd"].aev is None
    energy, forces, stress = task._forward(batches["jacobian"], True, True, False)
    reference_energy, reference_forces, reference_stress = task._forward(batches["autograd"], True, True, False)
    assert stress.shape == (1, 60, 3, 3) and np.abs(reference_stress.detach().numpy()).max() * EV_A3_GPA > 0.1
    torch.testing.assert_close(energy, reference_energy, rtol=0, atol=1e-10)
    torch.testing.assert_close(forces, reference_forces, rtol=0, atol=1e-10)
    torch.testing.assert_close(stress, reference_stress, rtol=0, atol=1e-12)


def test_stress_trains_from_the_cached_jacobian(copper, tmp_path):
    """model.force_mode=jacobian with stress: the cache gets its Jacobian rows and the stress error falls. The
    run monitors one level's validation energy MAE (as the mlearn_mo preset does): best.ckpt is its best epoch."""
    options = [o for o in SOLID if not o.startswith("model.force_mode")] + ["model.force_mode=jacobian"]
    code = train_main([*options, f"data.db={copper / 'cu.db'}", f"run_dir={tmp_path / 'run'}",
                       f"cache_dir={tmp_path / 'cache'}", "trainer.max_epochs=12", "monitor=val/emt/energy_mae_mev_atom"])
    assert code == 0
    rows = [line.split(",") for line in (tmp_path / "run" / "logs" / "metrics.csv").read_text().splitlines()]

    def column(name: str) -> list[tuple[str, float]]:  # (epoch, value); the epoch is logged with monitored values
        index, epoch = rows[0].index(name), rows[0].index("epoch")
        return [(row[epoch], float(row[index])) for row in rows[1:] if len(row) > index and row[index]]

    # the 12 epochs' validations; the final one after fitting re-validates best.ckpt
    values = [value for _, value in column("val/emt/stress_rmse_gpa")][:12]
    assert len(values) >= 10 and values[-1] < 0.7 * values[0], values
    energies = column("val/emt/energy_mae_mev_atom")[:12]
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=True)["epoch"]
    assert best == int(min(energies, key=lambda pair: pair[1])[0]), (best, energies)
    manifest = json.loads(next((tmp_path / "cache" / "aev").glob("*/manifest.json")).read_text())
    assert manifest["jacobian"] is True


def test_stress_training_needs_stress_labels(tmp_path, capsys):
    # the demo database holds molecules: no stress labels to train on
    code = train_main(["model.stress=true", "model.neurons=[16]", "trainer.progress_bar=false",
                       f"cache_dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'b'}"])
    user_error(SimpleNamespace(code=code, err=capsys.readouterr().err), "no training structure has a stress label",
               program="pykinml-train")
    assert not (tmp_path / "b").exists()


def test_a_log_variance_learning_rate_lets_the_energy_weight_reach_its_scale(copper, trained, tmp_path):
    """Per-atom energy errors in eV² are ~1e-4, so the energy's log-variance belongs near log(1e-4) ≈ −9; at the
    network's learning rate Adam moves it ~1e-3 per step and it stays near 0 (energies underweighted ~1000x).
    loss.weight_lr gives the log-variances their own rate: 12 epochs then move it several units."""
    code = train_main([*SOLID, f"data.db={copper / 'cu.db'}", f"run_dir={tmp_path / 'fast'}", f"cache_dir={copper / 'cache'}",
                       "trainer.max_epochs=12", "loss.weight_lr=0.05"])
    assert code == 0

    def energy_log_variance(run) -> float:
        state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        return float(state["state_dict"]["weights.log_variance"][0])

    assert energy_log_variance(trained) > -0.5  # the default: the network's rate, 1e-3
    assert energy_log_variance(tmp_path / "fast") < -3.0


def test_the_mlearn_preset_sets_keys_of_the_primary_config():
    """An experiment preset is applied after the primary config, so its loss.* settings take effect (they were
    silently overridden by train.yaml's defaults before), and the command line still wins over the preset."""
    from pykinml.config import compose_config

    config = compose_config(["experiment=mlearn_mo"])
    assert config.loss.energy == "per_atom" and config.loss.weight_lr == 0.05
    assert config.model.stress and config.model.force_mode == "jacobian" and config.data.split == "mlearn"
    assert compose_config(["experiment=mlearn_mo", "loss.weight_lr=0.01"]).loss.weight_lr == 0.01
