"""Reading checkpoints safely (``weights_only=True``) and checking that one fits a run before anything starts."""

from __future__ import annotations

from pathlib import Path

import torch

from pykinml.errors import PykinmlError

#: model architecture keys that must agree between a checkpoint and the run that resumes or starts from it
ARCHITECTURE = ("neurons", "activations", "bias")


def load_checkpoint(path: str | Path, option: str) -> dict:
    """The checkpoint at ``path`` as plain data (never unpickling code); ``option`` names the config key."""
    path = Path(path)
    if not path.is_file():
        raise PykinmlError(f"{option}={path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise PykinmlError(f"{option}={path}: not a readable pykinml checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if not isinstance(checkpoint, dict) or "pykinml" not in checkpoint or "state_dict" not in checkpoint:
        raise PykinmlError(f"{option}={path}: not a pykinml checkpoint (no model description in it)")
    return checkpoint


def check_compatible(checkpoint: dict, config: dict, option: str, path: str, resume: bool) -> None:
    """One-line error when the checkpoint's model cannot continue in the run ``config`` describes."""
    saved = checkpoint["pykinml"]
    saved_model = saved["config"]["model"]
    for key in ARCHITECTURE:
        if saved_model[key] != config["model"][key]:
            raise PykinmlError(
                f"{option}={path}: incompatible checkpoint: model.{key} is {saved_model[key]} there but "
                f"{config['model'][key]} in this run"
            )
    levels = list(config["data"]["levels"])
    if saved["fidelity"] != config["fidelity"]["name"] or list(saved["levels"]) != levels:
        if resume or saved["fidelity"] != config["fidelity"]["name"]:
            raise PykinmlError(
                f"{option}={path}: incompatible checkpoint: it trains fidelity={saved['fidelity']} on levels "
                f"{list(saved['levels'])}, this run fidelity={config['fidelity']['name']} on {levels}"
            )
    if resume and bool(saved["config"]["model"]["forces"]) != bool(config["model"]["forces"]):
        raise PykinmlError(
            f"{option}={path}: model.forces differs from the checkpoint's; to change it start a new run "
            f"with init_from={path}"
        )
