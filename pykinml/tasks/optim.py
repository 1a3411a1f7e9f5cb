"""Optimizers (adam, adamw, sgd) and learning-rate schedules (plateau, exponential, step, none) from config."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from pykinml.errors import PykinmlError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("plateau", "budget", "exponential", "step", "none")


class BudgetSchedule:
    """Decay each learning rate geometrically from its initial value to ``min_lr`` as the budget is used.

    The budget is ``trainer.max_time`` when set (wall-clock), else ``trainer.max_epochs``; the task calls
    :meth:`step` with the fraction used, so a run of any length ends at ``min_lr`` instead of dropping
    to a floor early (a plateau schedule) or never getting there.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, min_lr: float):
        self.optimizer, self.min_lr = optimizer, float(min_lr)
        self.base = [float(group["lr"]) for group in optimizer.param_groups]
        self.fraction = 0.0

    def step(self, fraction: float) -> None:
        self.fraction = min(max(float(fraction), 0.0), 1.0)
        for group, base in zip(self.optimizer.param_groups, self.base):
            if base > 0:
                group["lr"] = base * (min(self.min_lr, base) / base) ** self.fraction

    def state_dict(self) -> dict:
        return {"base": list(self.base), "fraction": self.fraction, "min_lr": self.min_lr}

    def load_state_dict(self, state: dict) -> None:
        self.base, self.fraction, self.min_lr = list(state["base"]), float(state["fraction"]), float(state["min_lr"])


def build_optimizer(config: dict, model_parameters: Iterable, weight_parameters: Iterable,
                    weight_lr: float | None = None) -> torch.optim.Optimizer:
    """The optimizer ``config['name']``; the loss-weight parameters get no weight decay and, with ``weight_lr``,
    their own learning rate (Adam moves a log-variance by about lr per step, so one that must travel far,
    e.g. to log(1e-4) for per-atom energies in eV², needs a larger one than the network's)."""
    name = config["name"]
    groups = [
        {"params": list(model_parameters), "weight_decay": float(config.get("weight_decay", 0.0))},
        {"params": list(weight_parameters), "weight_decay": 0.0},
    ]
    if weight_lr is not None:
        if weight_lr <= 0:
            raise PykinmlError(f"loss.weight_lr must be positive, got {weight_lr}")
        groups[1]["lr"] = float(weight_lr)
    groups = [group for group in groups if group["params"]]
    lr = float(config["lr"])
    betas = tuple(config.get("betas") or (0.9, 0.999))
    # fused: one kernel for all parameters (4.5x faster than the per-tensor loop for ANI-sized networks)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, fused=True)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
    if name == "sgd":
        if config.get("nesterov", False) and float(config.get("momentum", 0.0)) <= 0:
            raise PykinmlError("optim.nesterov=true needs optim.momentum > 0")
        return torch.optim.SGD(groups, lr=lr, momentum=float(config.get("momentum", 0.0)),
                               nesterov=bool(config.get("nesterov", False)))
    raise PykinmlError(f"unknown optim.name {name!r}; choose from {', '.join(OPTIMIZERS)}")


def build_scheduler(config: dict, optimizer: torch.optim.Optimizer):
    """The learning-rate schedule ``config['name']`` (stepped once per epoch by the task), or ``None``."""
    name = config["name"]
    if name == "none":
        return None
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=float(config["factor"]), patience=int(config["patience"]),
            threshold=float(config["threshold"]), threshold_mode=config.get("threshold_mode", "rel"),
            cooldown=int(config.get("cooldown", 0)), min_lr=float(config.get("min_lr", 0.0)),
        )
    if name == "budget":
        return BudgetSchedule(optimizer, float(config.get("min_lr", 0.0)))
    if name == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=float(config["gamma"]))
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(config["step_size"]), gamma=float(config["gamma"]))
    raise PykinmlError(f"unknown scheduler.name {name!r}; choose from {', '.join(SCHEDULERS)}")
