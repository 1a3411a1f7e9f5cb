"""Optimizers (adam, adamw, sgd) and learning-rate schedules (plateau, exponential, step, none) from config."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from pykinml.errors import PykinmlError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("plateau", "exponential", "step", "none")


def build_optimizer(config: dict, model_parameters: Iterable, weight_parameters: Iterable) -> torch.optim.Optimizer:
    """The optimizer ``config['name']``; the loss-weight parameters get no weight decay."""
    name = config["name"]
    groups = [
        {"params": list(model_parameters), "weight_decay": float(config.get("weight_decay", 0.0))},
        {"params": list(weight_parameters), "weight_decay": 0.0},
    ]
    groups = [group for group in groups if group["params"]]
    lr = float(config["lr"])
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=tuple(config.get("betas", (0.9, 0.999))))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(config.get("betas", (0.9, 0.999))))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(config.get("momentum", 0.0)),
                               nesterov=bool(config.get("nesterov", False)))
    raise PykinmlError(f"unknown optim.name {name!r}; choose from {', '.join(OPTIMIZERS)}")


def build_scheduler(config: dict, optimizer: torch.optim.Optimizer, monitor: str) -> dict | None:
    """A Lightning scheduler entry for ``config['name']`` (stepped once per epoch), or ``None``."""
    name = config["name"]
    if name == "none":
        return None
    if name == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=float(config["factor"]), patience=int(config["patience"]),
            threshold=float(config["threshold"]), threshold_mode=config.get("threshold_mode", "rel"),
            cooldown=int(config.get("cooldown", 0)), min_lr=float(config.get("min_lr", 0.0)),
        )
        return {"scheduler": scheduler, "monitor": monitor, "interval": "epoch", "frequency": 1}
    if name == "exponential":
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=float(config["gamma"]))
    elif name == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(config["step_size"]), gamma=float(config["gamma"]))
    else:
        raise PykinmlError(f"unknown scheduler.name {name!r}; choose from {', '.join(SCHEDULERS)}")
    return {"scheduler": scheduler, "interval": "epoch", "frequency": 1}
