"""A separate virtualenv with aevmod 1.1.0, and running ``bench/aevmod_runner.py`` in it.

aevmod is what PyKinML 1.1.2 computes AEVs and their Jacobians with. It is kept out of the project's own
environment: it is installed into its own virtualenv (default ``bench/.venv-aevmod``, git-ignored) and
the runner is run there as a subprocess, exchanging ``.npz`` files. PyPI has no wheel of aevmod 1.1.0
for every Python; pip then builds it from the sdist (pybind11 C++ extension: needs a C++ compiler and
the Python headers, about a minute).

    from aevmod_env import aevmod_python, run_aevmod, write_input, saved_values
    python = aevmod_python()                      # creates bench/.venv-aevmod on first use
    write_input("in.npz", numbers, positions, offsets, ["C", "H"], 16, 8, 8, 5.2, 3.8, 0.95)
    result = run_aevmod(python, "in.npz", "out.npz", jacobian=True, save_values=5)
    result["aev_mean_seconds"], result["jac_mean_seconds"], result["jac_peak_bytes_per_structure"]
    for aev, jac in saved_values(result): ...     # (n_atoms, D), (n_atoms, D, n_atoms, 3)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = HERE / ".venv-aevmod"
RUNNER = HERE / "aevmod_runner.py"
AEVMOD_VERSION = "1.1.0"
CHECK = f"import numpy, aevmod; from importlib.metadata import version; assert version('aevmod') == '{AEVMOD_VERSION}'"


def venv_python(venv_dir: Path) -> Path:
    if os.name == "nt":
        return venv_dir / "Scripts" / "python.exe"
    return venv_dir / "bin" / "python"


def _works(python: Path) -> bool:
    if not python.exists():
        return False
    return subprocess.run([str(python), "-c", CHECK], capture_output=True).returncode == 0


def aevmod_python(venv_dir: Path = DEFAULT_VENV) -> Path:
    """The python of a virtualenv holding aevmod 1.1.0 and numpy; created and installed if needed."""
    venv_dir = Path(venv_dir)
    python = venv_python(venv_dir)
    if _works(python):
        return python
    if not python.exists() or subprocess.run([str(python), "-c", "pass"], capture_output=True).returncode != 0:
        # missing, or left over from another machine (its interpreter link no longer resolves): start anew
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv_dir)], check=True)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet",
         f"aevmod=={AEVMOD_VERSION}", "numpy"],
        capture_output=True, text=True,
    )
    if install.returncode != 0 or not _works(python):
        raise RuntimeError(
            f"could not install aevmod=={AEVMOD_VERSION} into {venv_dir} (it builds from source: a C++ "
            f"compiler and the Python headers are needed):\n{install.stdout}\n{install.stderr}"
        )
    return python


def write_input(path, numbers, positions, offsets, elements, n_rad, n_rho_ang, n_ang, rc_rad, rc_ang,
                beta=0.95) -> Path:
    """Write the runner's INPUT.npz (positions in Å, elements in model order)."""
    path = Path(path)
    with open(path, "wb") as handle:
        np.savez(
            handle,
            numbers=np.asarray(numbers, dtype=np.uint8),
            positions=np.asarray(positions, dtype=np.float64).reshape(-1, 3),
            offsets=np.asarray(offsets, dtype=np.int64),
            elements=np.array([str(e) for e in elements]),
            n_rad=np.int64(n_rad), n_rho_ang=np.int64(n_rho_ang), n_ang=np.int64(n_ang),
            rc_rad=np.float64(rc_rad), rc_ang=np.float64(rc_ang), beta=np.float64(beta),
        )
    return path


def run_aevmod(python, input_npz, output_npz, jacobian: bool = True, save_values: int = 0,
               repeat: int = 1, memory: bool = True, timeout: float | None = None) -> dict:
    """Run the runner under ``python``; return OUTPUT.npz as a dict (0-d arrays as Python scalars)."""
    command = [str(python), str(RUNNER), str(input_npz), str(output_npz), "--repeat", str(repeat)]
    if jacobian:
        command.append("--jacobian")
    if save_values:
        command += ["--save-values", str(save_values)]
    if not memory:
        command.append("--no-memory")
    run = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if run.returncode != 0:
        raise RuntimeError(f"aevmod runner failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
    with np.load(output_npz, allow_pickle=False) as data:
        return {key: (data[key].item() if data[key].ndim == 0 else data[key]) for key in data.files}


def saved_values(result: dict) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The saved (AEV (n_atoms, D), Jacobian (n_atoms, D, n_atoms, 3) or None) of each saved structure."""
    if "saved_aev" not in result:
        return []
    aev, atom_offsets = result["saved_aev"], result["saved_atom_offsets"]
    jac, jac_offsets = result.get("saved_jac"), result.get("saved_jac_offsets")
    values = []
    for s in range(int(result["saved_count"])):
        g = aev[atom_offsets[s]:atom_offsets[s + 1]]
        j = None
        if jac is not None:
            n = len(g)
            j = jac[jac_offsets[s]:jac_offsets[s + 1]].reshape(n, g.shape[1], n, 3)
        values.append((g, j))
    return values
