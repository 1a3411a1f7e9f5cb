"""pykinml-predict, load_model and the ASE calculator on models trained (briefly, for real) on the demo database.

Forces and stress are checked against central finite differences of the energy in float64, MD against
Verlet's second order, and every way of running a model (CLI, Python API, calculator) against the others.
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import ase.db
import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.lj import LennardJones
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from pykinml.calculator import PykinmlCalculator
from pykinml.cli.predict import main as predict_main
from pykinml.config import compose_config
from pykinml.errors import PykinmlError
from pykinml.molecule import MAX_ATOMS, MoleculePotential
from pykinml.predict import load_model
from pykinml.train import train

from .checks import user_error

torch.set_num_threads(1)

DEMO_XYZ = __import__("pathlib").Path(__file__).resolve().parents[1] / "examples" / "data" / "demo.extxyz"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One real (one-epoch) run directory per fidelity mode, trained on the demo database."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for fidelity in ("single", "multi", "delta"):
        config = compose_config([
            f"fidelity={fidelity}", "model.neurons=[24,16]", "trainer.max_epochs=1", "trainer.progress_bar=false",
            "logger=csv", f"run_dir={root / fidelity}", f"cache_dir={root / 'cache'}",
        ])
        out[fidelity] = train(config).run_dir
    return out


@pytest.fixture(scope="module")
def frames():
    return ase.io.read(DEMO_XYZ, ":")


def subset(tmp_path, frames, picks, name="in.extxyz"):
    path = tmp_path / name
    ase.io.write(path, [frames[k] for k in picks], format="extxyz")
    return path


def run_predict(capsys, *args):
    code = predict_main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def periodic_cell(frames) -> Atoms:
    """A 2×1×1 periodic box of an ethanol geometry, small enough that atoms see their own images."""
    ethanol = next(a for a in frames if a.get_chemical_formula() == "C2H6O").copy()
    ethanol.set_cell([6.0, 6.5, 7.0])
    ethanol.pbc = True
    ethanol.center()
    cell = ethanol.repeat((2, 1, 1))
    cell.rattle(0.05, seed=3)
    return cell


def finite_difference_forces(model, atoms, h=1e-5):
    forces = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for c in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[i, c] += sign * h
                energies.append(model.predict([moved], forces=False).energies[-1, 0])
            forces[i, c] = -(energies[0] - energies[1]) / (2 * h)
    return forces


# --- the Python API and the calculator ----------------------------------------------------------------------

def test_forces_and_stress_equal_finite_differences_of_the_energy(runs, frames):
    model = load_model(runs["single"], dtype="float64")
    molecule = frames[250]
    predicted = model.predict([molecule])
    np.testing.assert_allclose(predicted.forces[0][0], finite_difference_forces(model, molecule), atol=1e-6)
    cell = periodic_cell(frames)
    predicted = model.predict([cell])
    np.testing.assert_allclose(predicted.forces[0][0], finite_difference_forces(model, cell), atol=1e-6)
    # stress = (1/V) ∂E/∂ε under a symmetric strain of cell and positions together
    h, volume, fd = 1e-5, cell.get_volume(), np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            energies = []
            for sign in (1, -1):
                strain = np.zeros((3, 3))
                strain[i, j] = strain[j, i] = sign * h / (1 if i == j else 2)
                strained = cell.copy()
                strained.set_cell(cell.cell.array @ (np.eye(3) + strain), scale_atoms=True)
                energies.append(model.predict([strained], forces=False).energies[0, 0])
            fd[i, j] = (energies[0] - energies[1]) / (2 * h) / volume
    np.testing.assert_allclose(predicted.stress[0, 0], fd, atol=1e-7)
    assert np.abs(fd).max() > 1e-4  # the rattled box is not stress-free, so the check has teeth


def test_batches_of_mixed_frames_equal_one_frame_at_a_time(runs, frames):
    model = load_model(runs["multi"], dtype="float64")
    mixed = [frames[k] for k in (0, 120, 250, 380, 470, 590)] + [periodic_cell(frames)]
    together = model.predict(mixed)
    assert together.names == ["gfn1", "gfn2"] and together.energies.shape == (2, 7)
    for k, atoms in enumerate(mixed):
        alone = model.predict([atoms])
        np.testing.assert_allclose(together.energies[:, k], alone.energies[:, 0], rtol=1e-12)
        np.testing.assert_allclose(together.forces[k], alone.forces[0], atol=1e-10)
    assert np.isnan(together.stress[:, :6]).all() and np.isfinite(together.stress[:, 6]).all()


def test_bfgs_relaxes_and_verlet_md_conserves_energy_to_second_order(runs, frames):
    calculator = PykinmlCalculator(runs["single"])
    atoms = frames[250].copy()
    atoms.calc = calculator
    start = atoms.get_potential_energy()
    assert BFGS(atoms, logfile=None).run(fmax=0.01, steps=300)
    assert atoms.get_potential_energy() < start and np.abs(atoms.get_forces()).max() < 0.01
    drifts = []
    for step in (0.4, 0.2):
        md = atoms.copy()
        md.calc = calculator
        md.set_momenta(np.random.default_rng(1).normal(0.0, 0.25, (len(md), 3)) * np.sqrt(md.get_masses())[:, None])
        dynamics = VelocityVerlet(md, step * units.fs)
        total = [md.get_total_energy()]
        for _ in range(int(round(20 / step))):  # 20 fs
            dynamics.run(1)
            total.append(md.get_total_energy())
        drifts.append(np.ptp(total))
    assert drifts[0] < 5e-3, drifts
    assert 2.5 < drifts[0] / drifts[1] < 6.5, drifts  # Verlet: energy error ∝ dt²


def test_calculator_equals_pykinml_predict_and_delta_adds_its_baseline(runs, frames, tmp_path, capsys):
    path = subset(tmp_path, frames, [5, 300])
    code, _, err = run_predict(capsys, runs["single"], path, "-o", tmp_path / "out.extxyz", "--dtype", "float64")
    assert code == 0, err
    for predicted, atoms in zip(ase.io.read(tmp_path / "out.extxyz", ":"), ase.io.read(path, ":")):
        atoms.calc = PykinmlCalculator(runs["single"])
        assert atoms.get_potential_energy() == pytest.approx(predicted.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(atoms.get_forces(), predicted.get_forces(), atol=1e-7)  # extxyz keeps 8 decimals
    # a delta model needs its baseline; with one, energy and forces are baseline + Δ
    with pytest.raises(PykinmlError, match="delta model"):
        PykinmlCalculator(runs["delta"])
    baseline = LennardJones(sigma=1.2, epsilon=0.01, rc=4.0, smooth=True)
    atoms = frames[300].copy()
    atoms.calc = PykinmlCalculator(runs["delta"], baseline=baseline)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    delta = load_model(runs["delta"]).predict([atoms])
    low = atoms.copy()
    low.calc = LennardJones(sigma=1.2, epsilon=0.01, rc=4.0, smooth=True)
    assert energy == pytest.approx(low.get_potential_energy() + delta.energies[0, 0], abs=1e-9)
    np.testing.assert_allclose(forces, low.get_forces() + delta.forces[0][0], atol=1e-9)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_per_molecule_path_equals_predict_for_every_fidelity(runs, frames, dtype):
    """The calculator's per-molecule path (all triples, chain rule by hand) against autograd through the batched
    kernels, on trained models of every fidelity; one calculator follows molecules that change between calls."""
    picks = [frames[k] for k in (0, 120, 250, 380, 470, 590)]
    big = frames[590].copy()  # four ethanols, 36 atoms: more than MAX_ATOMS, so the batched path
    for shift in (4.0, 8.0, 12.0):
        big += Atoms(frames[590].numbers, positions=frames[590].positions + [shift, 0.0, 0.0])
    assert len(big) > MAX_ATOMS
    energy_tol, force_tol = (1e-9, 1e-7) if dtype == "float64" else (2e-4, 2e-4)  # CELU: torch's backward is ~1e-7 off
    for fidelity in ("single", "multi", "delta"):
        model = load_model(runs[fidelity], dtype=dtype)
        reference = model.predict(picks + [big])
        for compile in (False, True):
            for k, atoms in enumerate(picks):
                energies, forces = MoleculePotential(model, atoms.numbers, compile=compile)(atoms.positions)
                np.testing.assert_allclose(energies, reference.energies[:, k], rtol=0, atol=energy_tol)
                np.testing.assert_allclose(forces, reference.forces[k], rtol=0, atol=force_tol)
        if fidelity == "delta":
            continue
        calculator = PykinmlCalculator(runs[fidelity], dtype=dtype, level=model.names[0])
        for k, atoms in enumerate(picks + [big]):
            atoms = atoms.copy()
            atoms.calc = calculator
            assert atoms.get_potential_energy() == pytest.approx(reference.energies[0, k], abs=energy_tol)
            np.testing.assert_allclose(atoms.get_forces(), reference.forces[k][0], rtol=0, atol=force_tol)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_predict_runs_a_trajectory_on_the_per_molecule_path_and_agrees_with_the_neighbour_list_kernels(runs, frames, dtype):
    """Model.predict on many conformations of one molecule (a trajectory; what pykinml-predict reads) takes the
    per-molecule path for all of them at once; each frame predicted alone takes the neighbour-list kernels.
    Mixed in: a molecule with too few frames for that path, one too big for it and a periodic cell, in order."""
    picks = [frames[k] for k in range(0, 30)] + [frames[k] for k in range(100, 104)] + [frames[k] for k in range(470, 500, 2)]
    big = frames[590].copy()
    for shift in (4.0, 8.0):
        big += Atoms(frames[590].numbers, positions=frames[590].positions + [shift, 0.0, 0.0])
    batch = picks[:20] + [big, periodic_cell(frames)] + picks[20:]
    energy_tol, force_tol = (1e-9, 1e-7) if dtype == "float64" else (2e-4, 2e-4)
    for fidelity in ("single", "multi", "delta"):
        model = load_model(runs[fidelity], dtype=dtype)
        together = model.predict(batch)
        # 30 CH4 and 15 CH3OH frames take the per-molecule path (private, read here only to check the dispatch)
        assert sorted(len(np.frombuffer(key, dtype=np.int64)) for key in model._molecules) == [5, 6]
        for k, atoms in enumerate(batch):
            alone = model.predict([atoms])
            np.testing.assert_allclose(together.energies[:, k], alone.energies[:, 0], rtol=0, atol=energy_tol)
            np.testing.assert_allclose(together.forces[k], alone.forces[0], rtol=0, atol=force_tol)
        assert np.isnan(together.stress[:, :21]).all() and np.isnan(together.stress[:, 22:]).all()
        np.testing.assert_allclose(together.stress[:, 21], model.predict([batch[21]]).stress[:, 0], rtol=0, atol=force_tol)


# --- pykinml-predict ----------------------------------------------------------------------------------------

def test_predict_writes_extxyz_results_and_reports_errors_against_reference_labels(runs, frames, tmp_path, capsys):
    path = subset(tmp_path, frames, range(0, 600, 7))
    out = tmp_path / "predicted.extxyz"
    code, stdout, err = run_predict(capsys, runs["single"], path, "-o", out, "--reference-key", "gfn2_energy",
                                    "--batch-size", "16", "--dtype", "float64")
    assert code == 0, err
    written, inputs = ase.io.read(out, ":"), ase.io.read(path, ":")
    assert len(written) == len(inputs) == 86
    model = load_model(runs["single"], dtype="float64")
    expected = model.predict(inputs)
    energies = np.array([a.get_potential_energy() for a in written])
    np.testing.assert_allclose(energies, expected.energies[0], rtol=1e-12)
    for k, atoms in enumerate(written):
        np.testing.assert_allclose(atoms.get_forces(), expected.forces[k][0], atol=1e-7)
        np.testing.assert_allclose(atoms.positions, inputs[k].positions)
        assert atoms.info["gfn2_energy"] == inputs[k].info["gfn2_energy"]  # the input's labels are kept
    reference = np.array([a.info["gfn2_energy"] for a in inputs])
    rmse_kcal = np.sqrt(np.mean((energies - reference) ** 2)) * 23.060548
    line = next(line for line in stdout.splitlines() if line.startswith("against gfn2_energy (86 frames)"))
    assert f"{rmse_kcal:.3f} kcal/mol" in line
    force_error = np.concatenate([(a.get_forces() - b.arrays["gfn2_forces"]).ravel() for a, b in zip(written, inputs)])
    assert f"RMSE {np.sqrt(np.mean(force_error**2)):.5f} eV/Å" in stdout


def test_multi_fidelity_output_has_every_level_and_csv_json_and_globs_work(runs, frames, tmp_path, capsys):
    for name, picks in (("a.extxyz", [0, 1, 2]), ("b.extxyz", [400, 401])):
        subset(tmp_path, frames, picks, name)
    db = ase.db.connect(tmp_path / "c.db")
    db.write(frames[590])
    out = tmp_path / "multi.extxyz"
    code, stdout, err = run_predict(capsys, runs["multi"], tmp_path / "*.extxyz", tmp_path / "c.db", "-o", out)
    assert code == 0, err
    assert "6 frames from 3 file(s)" in stdout
    written = ase.io.read(out, ":")
    model = load_model(runs["multi"], dtype="float32")
    assert model.module.potential.sae.dtype == torch.float64  # float32 networks, but the large SAE sums in float64
    expected = model.predict([frames[k] for k in (0, 1, 2, 400, 401, 590)])
    for k, atoms in enumerate(written):
        for t, level in enumerate(("gfn1", "gfn2")):
            assert atoms.info[f"{level}_energy"] == pytest.approx(expected.energies[t, k], abs=1e-6)
            np.testing.assert_allclose(atoms.arrays[f"{level}_forces"], expected.forces[k][t], atol=1e-5)
        assert atoms.get_potential_energy() == pytest.approx(atoms.info["gfn2_energy"])
    assert written[0].info["input_gfn2_energy"] == frames[0].info["gfn2_energy"]  # renamed, not lost
    code, _, err = run_predict(capsys, runs["multi"], tmp_path / "a.extxyz", "-o", tmp_path / "e.csv", "--level", "gfn1")
    assert code == 0, err
    rows = (tmp_path / "e.csv").read_text().splitlines()
    assert rows[0] == "source,frame,formula,natoms,energy,gfn1_energy,gfn2_energy" and len(rows) == 4
    assert float(rows[1].split(",")[4]) == pytest.approx(expected.energies[0, 0], abs=1e-6)
    code, _, err = run_predict(capsys, runs["multi"], tmp_path / "b.extxyz", "-o", tmp_path / "e.json", "--no-forces")
    records = json.loads((tmp_path / "e.json").read_text())
    assert [r["frame"] for r in records] == [0, 1] and records[1]["energy"] == pytest.approx(expected.energies[1, 4], abs=1e-6)


def test_delta_predict_adds_the_baseline_from_the_input(runs, frames, tmp_path, capsys):
    path = subset(tmp_path, frames, range(3, 600, 50))
    out = tmp_path / "high.extxyz"
    code, stdout, err = run_predict(capsys, runs["delta"], path, "-o", out, "--baseline-key", "gfn1_energy",
                                    "--reference-key", "gfn2_energy", "--dtype", "float64")
    assert code == 0, err
    inputs, written = ase.io.read(path, ":"), ase.io.read(out, ":")
    delta = load_model(runs["delta"], dtype="float64").predict(inputs)
    for k, (atoms, source) in enumerate(zip(written, inputs)):
        assert atoms.get_potential_energy() == pytest.approx(source.info["gfn1_energy"] + delta.energies[0, k], abs=1e-9)
        np.testing.assert_allclose(atoms.get_forces(), source.arrays["gfn1_forces"] + delta.forces[k][0], atol=1e-7)
        assert atoms.info["delta_energy"] == pytest.approx(delta.energies[0, k], abs=1e-9)
    assert "against gfn2_energy (12 frames)" in stdout


def test_periodic_frames_get_stress_in_the_output(runs, frames, tmp_path, capsys):
    cell = periodic_cell(frames)
    ase.io.write(tmp_path / "cell.extxyz", [frames[3], cell])
    code, _, err = run_predict(capsys, runs["single"], tmp_path / "cell.extxyz", "-o", tmp_path / "out.extxyz",
                               "--dtype", "float64")
    assert code == 0, err
    molecule, box = ase.io.read(tmp_path / "out.extxyz", ":")
    expected = load_model(runs["single"], dtype="float64").predict([cell])
    np.testing.assert_allclose(box.get_stress(voigt=False), expected.stress[0, 0], atol=1e-8)
    assert box.pbc.all() and np.allclose(box.cell.array, cell.cell.array)
    assert "stress" not in molecule.calc.results


def test_hartree_labels_and_a_checkpoint_file_as_the_model(runs, frames, tmp_path, capsys):
    """--units converts reference labels given in Hartree; a checkpoint path works as well as a run directory."""
    atoms = [frames[k].copy() for k in (10, 20)]
    for a in atoms:
        a.info["ref"] = a.info["gfn2_energy"] / 27.211386245988
        a.arrays["ref_forces"] = a.arrays["gfn2_forces"] / (27.211386245988 / 0.529177210903)
    ase.io.write(tmp_path / "h.extxyz", atoms)
    checkpoint = runs["single"] / "checkpoints" / "best.ckpt"
    code, ev, _ = run_predict(capsys, checkpoint, tmp_path / "h.extxyz", "-o", tmp_path / "1.xyz",
                              "--reference-key", "ref", "--units", "hartree")
    code2, plain, _ = run_predict(capsys, checkpoint, subset(tmp_path, frames, [10, 20]), "-o", tmp_path / "2.xyz",
                                  "--reference-key", "gfn2_energy")
    assert code == code2 == 0
    assert ev.splitlines()[1].split(":")[1] == plain.splitlines()[1].split(":")[1]


# --- bad input: one line, exit code 2, no output file ----------------------------------------------------------

@pytest.mark.parametrize("case", ["malformed", "element", "not_a_model", "not_a_run", "delta_without_baseline",
                                  "missing_input", "missing_reference"])
def test_bad_input_is_one_line_exit_2_and_no_output(runs, frames, tmp_path, capsys, case):
    good = subset(tmp_path, frames, [0, 1, 2])
    model, inputs, extra = runs["single"], [good], []
    if case == "malformed":
        text = good.read_text().splitlines()
        text[9] = "C 0.0 zero 1.0"  # frame 1's second atom
        (tmp_path / "bad.xyz").write_text("\n".join(text) + "\n")
        inputs, expected = [tmp_path / "bad.xyz"], "bad.xyz:10"
    elif case == "element":
        ase.io.write(tmp_path / "si.xyz", [frames[0], Atoms("SiH4", positions=frames[0].positions)])
        inputs, expected = [tmp_path / "si.xyz"], "si.xyz:8: atom 0 is Si"  # frame 1 starts on line 8
    elif case == "not_a_model":
        model = tmp_path / "weights.pt"
        torch.save({"w": torch.zeros(3)}, model)
        expected = "not a pykinml checkpoint"
    elif case == "not_a_run":
        model, expected = tmp_path, "not a pykinml run directory"
    elif case == "delta_without_baseline":
        model, expected = runs["delta"], "--baseline-key"
    elif case == "missing_input":
        inputs, expected = [tmp_path / "nothing*.xyz"], "no such file"
    else:
        extra, expected = ["--reference-key", "dft_energy"], "'dft_energy'"
    out = tmp_path / "out.extxyz"
    code, stdout, err = run_predict(capsys, model, *inputs, "-o", out, *extra)
    user_error(SimpleNamespace(code=code, out=stdout, err=err), expected, program="pykinml-predict")
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_console_script_is_installed(runs, frames, tmp_path):
    path = subset(tmp_path, frames, [0])
    done = subprocess.run([sys.executable, "-m", "pykinml.cli.predict", str(runs["single"]), str(path), "-o",
                           str(tmp_path / "o.extxyz")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ase.io.read(tmp_path / "o.extxyz").get_potential_energy() < 0
