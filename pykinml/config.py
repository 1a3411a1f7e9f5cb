"""pykinml-train's configuration: compose it with Hydra from the packaged tree, and check it against a schema.

Composition uses Hydra's compose API over ``pykinml.conf`` (plus a user's own config directory), so it works
from an installed package in any directory. The composed config is merged into the dataclass schema below:
a key the schema lacks (a typo in a user's YAML file as much as on the command line) is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from pykinml.demo import DEMO_DB, DEMO_LEVELS
from pykinml.errors import PykinmlError

# Optional[...] rather than X | None: OmegaConf reads these annotations at run time (Python 3.10 too).


@dataclass
class DataConfig:
    db: str = MISSING
    levels: list[str] = MISSING
    names: list[str] | None = None
    split: str = "default"
    split_fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    batch_size: int = 50
    eval_batch_size: int = 256
    high_level_repeats: int = 1


@dataclass
class AEVConfig:
    preset: str | None = None
    elements: list[str] | None = None
    n_rad: int = 16
    n_rho_ang: int = 8
    n_ang: int = 8
    cutoffs: list[float] = field(default_factory=lambda: [5.2, 3.8])
    beta: float = 0.95
    zeta: float = 8.0
    dtype: str = "float32"


@dataclass
class ModelConfig:
    neurons: list[int] = field(default_factory=lambda: [160, 128, 96])
    activations: Any = "celu"
    bias: bool = True
    forces: bool = True
    force_mode: str = "jacobian"
    stress: bool = False


@dataclass
class FidelityConfig:
    name: str = "single"


@dataclass
class OptimConfig:
    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] | None = None
    momentum: float = 0.0
    nesterov: bool = False


@dataclass
class SchedulerConfig:
    name: str = "plateau"
    factor: float = 0.5
    patience: int = 10
    threshold: float = 1e-4
    threshold_mode: str = "rel"
    cooldown: int = 0
    min_lr: float = 0.0
    lr_floor: float | None = None
    gamma: float = 0.5
    step_size: int = 50


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    threads: int = 1
    shared_memory_allreduce: bool = True
    max_epochs: int = 100
    max_time: str | None = None
    gradient_clip_val: float | None = None
    precision: str = "32-true"
    log_every_n_steps: int = 10
    check_val_every_n_epoch: int = 1
    progress_bar: bool = True


@dataclass
class LoggerConfig:
    name: str = "csv"


@dataclass
class LossConfig:
    weighting: str = "uncertainty"
    force_weight: float = 0.5
    stress_weight: float = 0.1
    weight_lr: float | None = None
    energy: str = "per_structure"
    kind: str = "mse"


@dataclass
class EarlyStoppingConfig:
    patience: int | None = None
    min_delta: float = 0.0


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    aev: AEVConfig = field(default_factory=AEVConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    fidelity: FidelityConfig = field(default_factory=FidelityConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    seed: int = 0
    run_dir: str | None = None
    ckpt_path: str | None = None
    init_from: str | None = None
    monitor: str = "val/loss"
    cache_dir: str | None = None
    precompute_workers: int = 1


CHOICES = {
    "fidelity.name": ("single", "delta", "multi"),
    "model.force_mode": ("jacobian", "autograd"),
    "optim.name": ("adam", "adamw", "sgd"),
    "scheduler.name": ("plateau", "budget", "exponential", "step", "none"),
    "logger.name": ("csv", "tensorboard"),
    "loss.weighting": ("uncertainty", "fixed"),
    "loss.energy": ("per_structure", "per_atom"),
    "loss.kind": ("mse", "rmse"),
    "aev.dtype": ("float32", "float64"),
}


def _demo_levels(fidelity: str) -> list[str]:
    """The demo database's levels for a fidelity mode: its high level alone for single, both otherwise."""
    return [DEMO_LEVELS[-1]] if fidelity == "single" else list(DEMO_LEVELS)


def register_resolvers() -> None:
    """``${pykinml.demo_db:}`` and ``${pykinml.demo_levels:<fidelity>}`` used by ``data/demo.yaml``."""
    if not OmegaConf.has_resolver("pykinml.demo_db"):
        OmegaConf.register_new_resolver("pykinml.demo_db", lambda: str(DEMO_DB))
        OmegaConf.register_new_resolver("pykinml.demo_levels", _demo_levels)


def compose_config(overrides: list[str] = (), config_dir: str | None = None, config_name: str = "train") -> DictConfig:
    """Compose the run config from ``pykinml.conf`` (and ``config_dir``, searched first) with ``overrides``."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    register_resolvers()
    overrides = list(overrides)
    if config_dir is not None:
        directory = Path(config_dir).resolve()
        if not directory.is_dir():
            raise PykinmlError(f"--config-dir {config_dir}: no such directory")
        overrides.insert(0, f"hydra.searchpath=[file://{directory}]")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module("pykinml.conf", version_base="1.3"):
            config = compose(config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        message = " ".join(str(exc).split()).split(" Config search path:")[0]
        unknown = re.match(r"Could not override '([^']+)'", message)
        raise PykinmlError(f"unknown config key {unknown.group(1)!r}" if unknown else message) from None
    return validate(config)


def validate(config: DictConfig) -> DictConfig:
    """Merge into the schema (unknown keys and wrong types are errors), resolve, and check the choices."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), config)
        OmegaConf.resolve(merged)
        plain = OmegaConf.to_container(merged, throw_on_missing=True)
    except ConfigKeyError as exc:
        raise PykinmlError(f"unknown config key {exc.full_key!r}") from None
    except MissingMandatoryValue as exc:
        raise PykinmlError(f"config key {exc.full_key!r} must be set (e.g. {exc.full_key}=...)") from None
    except ValidationError as exc:
        raise PykinmlError(f"config key {exc.full_key!r}: {str(exc).splitlines()[0]}") from None
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(merged, key)
        if value not in allowed:
            raise PykinmlError(f"{key}={value} is not one of {', '.join(allowed)}")
    if plain["data"]["high_level_repeats"] < 1:
        raise PykinmlError(f"data.high_level_repeats must be 1 or more, got {plain['data']['high_level_repeats']}")
    if not plain["data"]["levels"]:
        raise PykinmlError("data.levels is empty; list the levels to train on, low -> high")
    return merged
