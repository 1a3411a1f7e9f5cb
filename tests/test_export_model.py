"""pykinml-export on models trained (briefly, for real) on the demo database, in every fidelity mode.

The exported file is run by plain torch in a separate Python where pykinml cannot be imported, and must
predict what ``load_model(checkpoint)`` predicts; its forces and stress must be the derivatives of its own
energy; ``load_model`` must take it like a checkpoint; bad input must be one line, exit code 2, no file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace

import ase.io
import numpy as np
import pytest
import torch

from pykinml.calculator import PykinmlCalculator
from pykinml.cli.export import main as export_main
from pykinml.config import compose_config
from pykinml.export import export_model
from pykinml.predict import load_model
from pykinml.train import train

from .checks import user_error

torch.set_num_threads(1)

DEMO_XYZ = Path(__file__).resolve().parents[1] / "examples" / "data" / "demo.extxyz"
FIDELITIES = ("single", "delta", "multi")
# every fidelity in float64, the chained multi-fidelity model (two networks per element) also in float32
EXPORTS = [(f, "float64") for f in FIDELITIES] + [("multi", "float32")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One real (one-epoch, small network) run directory per fidelity mode, trained on the demo database."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for fidelity in FIDELITIES:
        config = compose_config([
            f"fidelity={fidelity}", "model.neurons=[16,8]", "trainer.max_epochs=1", "trainer.progress_bar=false",
            "logger=csv", f"run_dir={root / fidelity}", f"cache_dir={root / 'cache'}",
        ])
        out[fidelity] = train(config).run_dir
    return out


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """The runs exported as listed in EXPORTS: {(fidelity, dtype): path}."""
    root = tmp_path_factory.mktemp("exported")
    return {(f, d): export_model(runs[f], root / f"{f}-{d}.pt", d) for f, d in EXPORTS}


@pytest.fixture(scope="module")
def structures():
    """An ethanol molecule from the demo file and a rattled periodic 2×1×1 box of it (atoms see their images)."""
    frames = ase.io.read(DEMO_XYZ, ":")
    molecule = next(a for a in frames if a.get_chemical_formula() == "C2H6O").copy()
    molecule.calc = None
    box = molecule.copy()
    box.set_cell([6.0, 6.5, 7.0])
    box.pbc = True
    box.center()
    box = box.repeat((2, 1, 1))
    box.rattle(0.05, seed=3)
    return molecule, box


# The child Python: no pykinml anywhere (its editable-install finder removed, a checkout on sys.path dropped,
# any import of it refused, also from a site-packages it shares with torch), just torch running each model.
PLAIN_TORCH = textwrap.dedent("""
    import json, os, sys

    class Refuse:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name.split(".")[0] == "pykinml":
                raise ImportError("pykinml is hidden here")

    sys.meta_path[:] = [Refuse] + [f for f in sys.meta_path if "pykinml" not in getattr(f, "__module__", "")]
    def holds(entry, package):
        return os.path.isfile(os.path.join(entry, package, "__init__.py"))

    sys.path[:] = [p for p in sys.path if not holds(p, "pykinml") or holds(p, "torch")]  # a checkout, not site-packages
    try:
        import pykinml  # noqa: F401
    except ImportError:
        pass
    else:
        sys.exit("pykinml is importable in the plain-torch process")

    import torch

    job = json.load(open(sys.argv[1]))
    inputs = torch.load(job["inputs"])
    results = {}
    for key, path in job["models"].items():
        extra = {"pykinml.json": ""}
        model = torch.jit.load(path, _extra_files=extra)
        meta = json.loads(extra["pykinml.json"])
        one = model(inputs["numbers"][0], inputs["positions"][0])
        box = model(inputs["numbers"][1], inputs["positions"][1], inputs["cell"], inputs["pbc"])
        batch = model.predict_batch(torch.cat(inputs["numbers"]), torch.cat(inputs["positions"]), inputs["offsets"],
                                    inputs["cells"], inputs["pbcs"], True, True)
        results[key] = {"molecule": one, "box": box, "batch": batch, "meta": meta,
                        "attributes": [model.fidelity, list(model.levels), list(model.names), list(model.elements)],
                        "dtype": str(next(model.parameters()).dtype)}
    assert "pykinml" not in sys.modules
    torch.save(results, job["out"])
""")


@pytest.fixture(scope="module")
def plain(exported, structures, tmp_path_factory):
    """What each exported model predicts in a separate Python with plain torch and no pykinml."""
    root = tmp_path_factory.mktemp("plain")  # a directory without the package, the child's working directory
    molecule, box = structures
    numbers = [torch.as_tensor(a.numbers, dtype=torch.int64) for a in structures]
    positions = [torch.as_tensor(a.positions, dtype=torch.float64) for a in structures]
    torch.save({
        "numbers": numbers, "positions": positions,
        "cell": torch.as_tensor(box.cell.array), "pbc": torch.as_tensor(box.pbc),
        "offsets": torch.tensor([0, len(molecule), len(molecule) + len(box)]),
        "cells": torch.as_tensor(np.array([molecule.cell.array, box.cell.array])),
        "pbcs": torch.as_tensor(np.array([molecule.pbc, box.pbc])),
    }, root / "inputs.pt")
    job = {"inputs": str(root / "inputs.pt"), "out": str(root / "results.pt"),
           "models": {f"{f}-{d}": str(path) for (f, d), path in exported.items()}}
    (root / "job.json").write_text(json.dumps(job))
    (root / "plain.py").write_text(PLAIN_TORCH)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run([sys.executable, "-I", str(root / "plain.py"), str(root / "job.json")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(root / "results.pt")


def reference(run_dir, structures, dtype="float64"):
    return load_model(run_dir, dtype=dtype).predict(list(structures), forces=True, stress=True)


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_plain_torch_predicts_what_load_model_predicts(runs, structures, plain, fidelity):
    """float64: energies, forces and stress agree with the eager model to 1e-10 (relative); float32 loosely."""
    molecule, box = structures
    n = len(molecule)
    ref = reference(runs[fidelity], structures)
    tolerances = {"float64": (1e-10, 1e-10, 1e-12), "float32": (1e-5, 1e-4, 1e-6)}  # energy (relative), forces, stress
    for dtype in [d for f, d in EXPORTS if f == fidelity]:
        rtol, force_atol, stress_atol = tolerances[dtype]
        out = plain[f"{fidelity}-{dtype}"]
        assert out["dtype"] == f"torch.{dtype}"
        model = load_model(runs[fidelity])
        assert out["attributes"] == [model.fidelity, model.levels, model.names, model.elements]
        assert out["meta"] == {**json.loads(json.dumps(model.meta)), "dtype": dtype}  # the checkpoint's description
        scale = np.abs(ref.energies).max()
        for energies, forces in (
            (out["molecule"]["energy"][:, None], out["molecule"]["forces"]),
            (out["batch"]["energy"][:, :1], out["batch"]["forces"][:, :n]),
        ):
            np.testing.assert_allclose(energies.numpy(), ref.energies[:, :1], rtol=0, atol=rtol * scale)
            np.testing.assert_allclose(forces.double().numpy(), ref.forces[0], rtol=0, atol=force_atol)
        for energies, forces, stress in (
            (out["box"]["energy"][:, None], out["box"]["forces"], out["box"]["stress"]),
            (out["batch"]["energy"][:, 1:], out["batch"]["forces"][:, n:], out["batch"]["stress"][:, 1]),
        ):
            np.testing.assert_allclose(energies.numpy(), ref.energies[:, 1:], rtol=0, atol=rtol * scale)
            np.testing.assert_allclose(forces.double().numpy(), ref.forces[1], rtol=0, atol=force_atol)
            np.testing.assert_allclose(stress.double().numpy(), ref.stress[:, 1], rtol=0, atol=stress_atol)
        assert np.abs(ref.stress[:, 1]).max() > 1e-4 and np.abs(ref.forces[1]).max() > 1e-2  # checks with teeth


def scripted_energy(model, atoms, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """Energies (T,) of ``atoms`` at ``positions`` in ``cell`` by the scripted model, no derivatives."""
    offsets = torch.tensor([0, len(atoms)])
    out = model.predict_batch(torch.as_tensor(atoms.numbers), positions, offsets, cell[None], torch.as_tensor(atoms.pbc)[None],
                              False, False)
    return out["energy"][:, 0]


def test_forces_and_stress_are_derivatives_of_the_exported_energy(exported, structures):
    """Central finite differences of the scripted model's own energy, float64, every target of a multi model."""
    model = torch.jit.load(str(exported["multi", "float64"]))
    h = 1e-5
    for atoms in structures:
        positions, cell = torch.as_tensor(atoms.positions), torch.as_tensor(atoms.cell.array)
        periodic = bool(atoms.pbc.any())
        if periodic:
            out = model(torch.as_tensor(atoms.numbers), positions, cell, torch.as_tensor(atoms.pbc))
        else:
            out = model(torch.as_tensor(atoms.numbers), positions)
        fd = torch.zeros_like(out["forces"])
        for i in range(len(atoms)):
            for c in range(3):
                step = torch.zeros_like(positions)
                step[i, c] = h
                plus, minus = (scripted_energy(model, atoms, positions + sign * step, cell) for sign in (1, -1))
                fd[:, i, c] = -(plus - minus) / (2 * h)
        torch.testing.assert_close(out["forces"], fd, rtol=0, atol=1e-6)
        assert out["forces"].abs().max() > 1e-2
        if periodic:  # stress = (1/V) ∂E/∂ε, cell and positions strained together
            volume, fd_stress = float(torch.linalg.det(cell).abs()), torch.zeros_like(out["stress"])
            for i in range(3):
                for j in range(3):
                    strain = torch.zeros(3, 3, dtype=torch.float64)
                    strain[i, j] = strain[j, i] = h / (1 if i == j else 2)
                    plus, minus = (
                        scripted_energy(model, atoms, positions @ deform, cell @ deform)
                        for deform in (torch.eye(3, dtype=torch.float64) + strain, torch.eye(3, dtype=torch.float64) - strain)
                    )
                    fd_stress[:, i, j] = (plus - minus) / (2 * h * volume)
            torch.testing.assert_close(out["stress"], fd_stress, rtol=0, atol=1e-7)
            assert out["stress"].abs().max() > 1e-4


def test_forces_and_stress_also_under_no_grad(runs, exported, structures):
    """Forces and stress are gradients: the scripted and the eager model compute them inside torch.no_grad() too."""
    box = structures[1]
    args = (torch.as_tensor(box.numbers), torch.as_tensor(box.positions), torch.as_tensor(box.cell.array), torch.as_tensor(box.pbc))
    for model in (torch.jit.load(str(exported["multi", "float64"])), load_model(runs["multi"]).module):
        expected = model(*args)
        with torch.no_grad():
            out = model(*args)
            assert not torch.is_grad_enabled()  # and grad mode is back as it was
        for name in ("energy", "forces", "stress"):
            torch.testing.assert_close(out[name], expected[name], rtol=0, atol=1e-12)


def test_load_model_takes_an_exported_model_like_a_checkpoint(runs, exported, structures):
    """load_model finds the metadata (extra/pykinml.json) and predicts what the checkpoint predicts."""
    with zipfile.ZipFile(exported["delta", "float64"]) as archive:
        assert any(name.endswith("extra/pykinml.json") for name in archive.namelist())
    for fidelity in FIDELITIES:
        from_file = load_model(exported[fidelity, "float64"])
        from_checkpoint = load_model(runs[fidelity])
        assert (from_file.fidelity, from_file.levels, from_file.names) == (
            from_checkpoint.fidelity, from_checkpoint.levels, from_checkpoint.names)
        assert isinstance(from_file.module, torch.jit.ScriptModule) and from_file.dtype == torch.float64
        a, b = from_file.predict(list(structures)), from_checkpoint.predict(list(structures))
        np.testing.assert_allclose(a.energies, b.energies, rtol=1e-12)
        for x, y in zip(a.forces, b.forces):
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-10)
        np.testing.assert_allclose(a.stress[:, 1], b.stress[:, 1], rtol=0, atol=1e-12)
        assert np.isnan(a.stress[:, 0]).all()  # the molecule has no cell
    kept = load_model(exported["multi", "float32"], dtype=None)
    assert kept.dtype == torch.float32 and kept.meta["dtype"] == "float32"
    # the ASE calculator on the exported file: the molecule through the per-molecule path, the box batched
    reference = load_model(runs["multi"]).predict(list(structures))
    for k, atoms in enumerate(structures):
        atoms = atoms.copy()
        atoms.calc = PykinmlCalculator(exported["multi", "float64"])
        assert atoms.get_potential_energy() == pytest.approx(reference.energies[-1, k], abs=1e-9)
        np.testing.assert_allclose(atoms.get_forces(), reference.forces[k][-1], rtol=0, atol=1e-7)


def test_command_line_export(runs, tmp_path, capsys):
    """pykinml-export writes the file (a checkpoint path works as well as a run directory) and says so."""
    out = tmp_path / "model.pt"
    code = export_main([str(runs["single"] / "checkpoints" / "last.ckpt"), "-o", str(out), "--dtype", "float64"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert str(out) in captured.out and "float64" in captured.out
    extra = {"pykinml.json": ""}
    model = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["pykinml.json"])["fidelity"] == "single" and model.names == ["gfn2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary file left


def test_console_script_is_registered():
    """pyproject.toml installs ``pykinml-export`` as this main (the tests above run it in-process)."""
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "pykinml-export"]
    assert script.value == "pykinml.cli.export:main" and script.load() is export_main


@pytest.mark.parametrize("case", ["missing", "not_a_checkpoint", "not_a_run", "no_directory", "parent_is_a_file",
                                  "unwritable"])
def test_bad_input_is_one_line_exit_2_and_no_file(runs, tmp_path, capsys, case):
    """One line naming the file at fault, exit code 2, and nothing written (no model, no temporary file)."""
    model, out = runs["single"], tmp_path / "out" / "model.pt"
    out.parent.mkdir()
    if case == "missing":
        model = tmp_path / "nothing.ckpt"
        expected = [f"{model}: no such model file"]
    elif case == "not_a_checkpoint":
        model = tmp_path / "weights.pt"
        torch.save({"w": torch.zeros(3)}, model)
        expected = [f"{model}: not a pykinml checkpoint"]
    elif case == "not_a_run":
        model = tmp_path / "out"
        expected = [f"{model}: a directory but not a pykinml run directory"]
    elif case == "no_directory":
        out = tmp_path / "missing" / "model.pt"
        expected = [str(out), f"{out.parent} does not exist"]
    elif case == "parent_is_a_file":
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "model.pt"
        expected = [str(out), f"{out.parent} is not a directory"]
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only directories")
        out.parent.chmod(0o500)
        expected = [str(out), "not writable"]
    before = sorted(tmp_path.rglob("*"))
    code = export_main([str(model), "-o", str(out)])
    captured = capsys.readouterr()
    user_error(SimpleNamespace(code=code, out=captured.out, err=captured.err), *expected, program="pykinml-export")
    assert sorted(tmp_path.rglob("*")) == before and not out.exists()


def test_an_element_the_model_lacks_is_refused_by_the_exported_model(exported, structures):
    """Run by plain torch, the model itself refuses atoms it has no network for, instead of mislabelling them."""
    model = torch.jit.load(str(exported["single", "float64"]))
    molecule = structures[0]
    for z in (14, 200):  # silicon (within the model's lookup table), and past it
        numbers = torch.as_tensor(molecule.numbers).clone()
        numbers[2] = z
        with pytest.raises(torch.jit.Error, match=f"atom 2 has atomic number {z}, not one of this model's elements"):
            model(numbers, torch.as_tensor(molecule.positions))
