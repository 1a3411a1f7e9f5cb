"""A separate virtualenv with the original PyKinML 1.1.2, and running ``bench/pykinml_original_runner.py`` in it.

The original PyKinML (``pykinml==1.1.2`` on PyPI) is the reference this project's benchmarks compare
against. It shares this project's package name, so it must never be installed into the project's own
environment: it goes into its own virtualenv (default ``bench/.venv-pykinml112``, git-ignored) and the
runner is run there as a subprocess, from a scratch working directory, writing a JSON file.

What the virtualenv holds, installed in this order:

1. ``torch==2.13.0`` alone first (with this machine's pip configuration the CPU wheel
   ``2.13.0+cpu`` is found locally and wins, so no CUDA wheels are downloaded);
2. ``pykinml==1.1.2`` with ``aevmod==1.1.0`` (PyPI has no aevmod wheel for every Python: pip builds it
   from the sdist, a pybind11 C++ extension: a C++ compiler and the Python headers, about a minute),
   numpy, and what the original imports without declaring: scipy (SAE fit), matplotlib (imported by
   ``aev.py``/``daev.py``); it declares ase, h5py and pandas itself;
3. ``torch-scatter==2.1.2`` (``segment_coo`` sums atomic energies): no wheel exists for torch 2.13, so pip
   compiles it from source with ``--no-build-isolation`` against the torch installed in step 1
   (several minutes on 2 cores).

The original needs three shims on torch 2.13; none changes any of its numbers. They are not written
into the installed package: the runner monkeypatches them at import time (see its docstring):
an empty ``torchvision`` (imported by ``prepper.py``, unused), ``ReduceLROnPlateau`` accepting and
dropping the ``verbose=`` argument torch removed, and ``torch.load`` defaulting to
``weights_only=False`` for the original's own pickled checkpoints.

    from pykinml_original_env import original_python, run_original
    python = original_python()                    # creates bench/.venv-pykinml112 on first use
    result = run_original(python, "out.json", epochs=2, config="best", max_structures=500)
    result["train"]["structures_per_second"], result["prep"]["aev_jacobian_seconds"]

or by hand: ``bench/.venv-pykinml112/bin/python bench/pykinml_original_runner.py --out OUT.json``
(``python bench/pykinml_original_env.py`` creates the virtualenv and prints its python).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aevmod_env import venv_python  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = HERE / ".venv-pykinml112"
RUNNER = HERE / "pykinml_original_runner.py"
PYKINML_VERSION = "1.1.2"
AEVMOD_VERSION = "1.1.0"
TORCH_VERSION = "2.13.0"
TORCH_SCATTER_VERSION = "2.1.2"
CHECK = (
    "import numpy, scipy, ase, torch, torch_scatter, aevmod; from importlib.metadata import version; "
    f"assert version('pykinml') == '{PYKINML_VERSION}'; assert version('aevmod') == '{AEVMOD_VERSION}'; "
    f"assert torch.__version__.split('+')[0] == '{TORCH_VERSION}'"
)
PIP = ["-m", "pip", "install", "--disable-pip-version-check", "--quiet"]


def _works(python: Path) -> bool:
    if not python.exists():
        return False
    # run outside the project so that nothing of /work/main can be imported by accident
    return subprocess.run([str(python), "-c", CHECK], capture_output=True, cwd=tempfile.gettempdir(),
                          env=_clean_env()).returncode == 0


def _clean_env() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    env.pop("VIRTUAL_ENV", None)
    return env


def original_python(venv_dir: Path = DEFAULT_VENV) -> Path:
    """The python of a virtualenv holding pykinml 1.1.2, aevmod 1.1.0, torch 2.13.0 and torch_scatter;
    created and installed if needed (the first time takes several minutes: torch_scatter is compiled)."""
    venv_dir = Path(venv_dir)
    python = venv_python(venv_dir)
    if _works(python):
        return python
    if not python.exists() or subprocess.run([str(python), "-c", "pass"], capture_output=True).returncode != 0:
        # missing, or left over from another machine (its interpreter link no longer resolves): start anew
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv_dir)], check=True)
    steps = [
        [f"torch=={TORCH_VERSION}"],
        ["setuptools", "wheel", "numpy", f"aevmod=={AEVMOD_VERSION}", f"pykinml=={PYKINML_VERSION}",
         "scipy", "matplotlib"],
        ["--no-build-isolation", f"torch-scatter=={TORCH_SCATTER_VERSION}"],
    ]
    env = _clean_env()
    env.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
    for step in steps:
        install = subprocess.run([str(python), *PIP, *step], capture_output=True, text=True,
                                 cwd=tempfile.gettempdir(), env=env)
        if install.returncode != 0:
            raise RuntimeError(
                f"could not install {' '.join(step)} into {venv_dir} (aevmod and torch-scatter build from "
                f"source: a C++ compiler and the Python headers are needed):\n{install.stdout}\n{install.stderr}"
            )
    if not _works(python):
        check = subprocess.run([str(python), "-c", CHECK], capture_output=True, text=True,
                               cwd=tempfile.gettempdir(), env=env)
        raise RuntimeError(f"{venv_dir} was installed but does not pass its check:\n{check.stderr}")
    return python


def run_original(python, out_json, epochs: int = 2, config: str = "best", max_structures: int | None = 500,
                 threads: int | None = None, extra_args: tuple[str, ...] = (),
                 timeout: float | None = None) -> dict:
    """Run the runner under ``python`` (from a scratch directory, without PYTHONPATH); return its JSON."""
    out_json = Path(out_json).resolve()
    command = [str(python), str(RUNNER), "--out", str(out_json), "--epochs", str(epochs), "--config", config]
    if max_structures is not None:
        command += ["--max-structures", str(max_structures)]
    if threads is not None:
        command += ["--threads", str(threads)]
    command += list(extra_args)
    run = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                         cwd=tempfile.gettempdir(), env=_clean_env())
    if run.returncode != 0:
        raise RuntimeError(f"pykinml original runner failed ({run.returncode}):\n{run.stdout[-5000:]}\n"
                           f"{run.stderr[-5000:]}")
    return json.loads(out_json.read_text())


if __name__ == "__main__":
    print(original_python())
