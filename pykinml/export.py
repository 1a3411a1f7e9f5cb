"""A trained model as one self-contained TorchScript file (``pykinml-export``), loadable with plain torch.

The file is the scripted :class:`~pykinml.nn.standalone.StandalonePotential` (neighbour search, AEV, chained
networks and self atomic energies: the same code that runs eagerly) plus, as the extra file
``pykinml.json``, the checkpoint's model description (fidelity, levels, elements, AEV constants, targets,
SAEs, training config) and the dtype. Without pykinml installed::

    extra = {"pykinml.json": ""}
    model = torch.jit.load("model.pt", _extra_files=extra)
    out = model(numbers, positions)            # one structure: energy (T,), forces (T, N, 3) [, stress]
    out = model.predict_batch(numbers, positions, offsets, cells, pbc, True, False)  # many structures
    model.names, model.levels, model.fidelity, model.elements   # what it predicts, as plain attributes

``pykinml.predict.load_model`` recognises the file (by its ``pykinml.json``) and predicts with it like
with a checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

from pykinml.errors import PykinmlError
from pykinml.predict import EXPORT_METADATA, load_model

#: the dtypes a model can be exported in
DTYPES = ("float32", "float64")


def export_model(model_path: str | Path, out_path: str | Path, dtype: str = "float32") -> Path:
    """Script the model of a checkpoint, run directory or exported model and save it at ``out_path``.

    The file appears complete or not at all (written under a temporary name in the same directory, then
    renamed). Bad input (no such model, not a pykinml checkpoint, an output directory that does not exist
    or cannot be written) raises a one-line :class:`PykinmlError` naming the file.
    """
    if dtype not in DTYPES:
        raise PykinmlError(f"unsupported dtype {dtype!r} for an exported model; use float32 or float64")
    out_path = Path(out_path)
    directory = out_path.parent
    if out_path.is_dir():
        raise PykinmlError(f"{out_path}: is a directory; give the exported model's file name")
    if directory.exists() and not directory.is_dir():
        raise PykinmlError(f"{out_path}: {directory} is not a directory")
    if not directory.is_dir():
        raise PykinmlError(f"{out_path}: the output directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PykinmlError(f"{out_path}: the output directory {directory} is not writable")
    model = load_model(model_path, device="cpu", dtype=dtype)
    meta = json.loads(json.dumps(model.meta))  # a plain copy; fails early if anything is not JSON
    meta["dtype"] = dtype
    _save_atomically(model.compiled().module, out_path, {EXPORT_METADATA: json.dumps(meta)})
    return out_path


def _save_atomically(module: torch.jit.ScriptModule, path: Path, extra_files: dict[str, str]) -> None:
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise PykinmlError(f"{path}: cannot write in {path.parent} ({exc.strerror})") from None
    os.close(handle)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(module, temporary, _extra_files=extra_files)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 → what a plain new file would get
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise PykinmlError(f"{path}: cannot write the exported model ({exc.strerror or exc})") from None
        if isinstance(exc, RuntimeError):  # torch's archive writer reports a failed write this way
            raise PykinmlError(f"{path}: cannot write the exported model ({str(exc).splitlines()[0][:200]})") from None
        raise

