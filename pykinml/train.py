"""Train a potential from a resolved configuration: the work behind ``pykinml-train`` (and its Python API).

Every input is checked before anything is written (database, levels, names, split, elements, checkpoints,
run directory); then the run directory gets the resolved config, checkpoints/{best,last}.ckpt, logs/ and,
at the end, metrics.json with the best model's validation and test errors per fidelity.

    from pykinml.config import compose_config
    from pykinml.train import train
    result = train(compose_config(["fidelity=multi", "trainer.max_epochs=20"]))
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from pykinml.aev.params import AEVParams
from pykinml.allocator import keep_freed_memory
from pykinml.callbacks import LearningRateFloor
from pykinml.checkpoints import check_compatible, load_checkpoint
from pykinml.data.module import PotentialDataModule
from pykinml.data.precompute import check_elements
from pykinml.data.training import TrainingData, load_training_data
from pykinml.db.connection import open_engine
from pykinml.distributed import ProcessRecord, default_run_dir, describe, shared_run_dir
from pykinml.errors import PykinmlError, TrainingTerminated
from pykinml.files import write_atomically
from pykinml.shared_memory_allreduce import SharedMemoryAllReduce
from pykinml.tasks.fidelity import task_class


@dataclass
class RunResult:
    run_dir: Path
    best_checkpoint: Path
    metrics: dict


def _run_dir(config: dict) -> Path:
    """Where this run writes; refuses a directory that already holds another run (nothing is overwritten)."""
    if config["ckpt_path"] is not None:
        if config["run_dir"] is not None:
            return Path(config["run_dir"])
        checkpoint = Path(config["ckpt_path"]).resolve()
        return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    run_dir = Path(config["run_dir"]) if config["run_dir"] is not None else default_run_dir(config["fidelity"]["name"])
    if (run_dir / "checkpoints").exists() or (run_dir / "metrics.json").exists():
        raise PykinmlError(
            f"run_dir={run_dir} already holds a run; choose another run_dir, or resume it with "
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
        )
    return run_dir


def _aev_params(config: dict, data: TrainingData, checkpoint: dict | None) -> AEVParams:
    """The AEV constants: the checkpoint's when starting from one, else from the ``aev`` config group."""
    if checkpoint is not None:
        params = AEVParams.from_dict(checkpoint["pykinml"]["aev"])
    else:
        aev = config["aev"]
        if aev["preset"] is not None:
            params = AEVParams.preset(aev["preset"])
        else:
            elements = aev["elements"] or data.elements()
            params = AEVParams.original(
                elements, n_rad=aev["n_rad"], n_rho_ang=aev["n_rho_ang"], n_ang=aev["n_ang"],
                cutoffs=tuple(aev["cutoffs"]), beta=aev["beta"], zeta=aev["zeta"],
            )
    check_elements(params, data.selection)
    return params


def _logger(config: dict, run_dir: Path):
    name = config["logger"]["name"]
    # A resumed run logs beside the first one (logs/resumed-<time>/), so the earlier epochs' log stays whole.
    version = f"resumed-{time.strftime('%Y%m%d-%H%M%S')}" if config.get("ckpt_path") else ""
    if name == "csv":
        return L.pytorch.loggers.CSVLogger(save_dir=str(run_dir), name="logs", version=version)
    try:
        return L.pytorch.loggers.TensorBoardLogger(save_dir=str(run_dir), name="logs", version=version)
    except ModuleNotFoundError:
        raise PykinmlError("logger=tensorboard needs the tensorboard package: pip install tensorboard") from None


def _callbacks(config: dict, run_dir: Path) -> tuple[list, L.pytorch.callbacks.ModelCheckpoint]:
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"), filename="best", monitor=config["monitor"], mode="min",
        save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False,
    )
    # last.ckpt is its own unmonitored checkpoint, rewritten at every epoch's end: Lightning's save_last
    # rewrites it only when the monitored checkpoint is saved, so it lagged behind after epochs that did
    # not improve, and a resume restarted from the best epoch instead of the last.
    latest = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"), filename="last", monitor=None, save_top_k=1,
        auto_insert_metric_name=False, enable_version_counter=False,
    )
    callbacks: list = [checkpoint, latest, L.pytorch.callbacks.LearningRateMonitor(logging_interval="epoch")]
    stopping = config["early_stopping"]
    if stopping["patience"] is not None:
        callbacks.append(L.pytorch.callbacks.EarlyStopping(
            monitor=config["monitor"], patience=int(stopping["patience"]), min_delta=float(stopping["min_delta"]), mode="min",
        ))
    if config["scheduler"].get("lr_floor") is not None:
        callbacks.append(LearningRateFloor(config["scheduler"]["lr_floor"]))
    return callbacks, checkpoint


def _strategy(name: str):
    """Lightning's strategy for ``trainer.strategy``. ``ddp`` skips DDP's broadcast of buffers before every
    forward (the only buffers, the SAEs, are fitted once and equal on every rank; the broadcast cost ~2 ms a
    step on CPU) and lets gradients live in DDP's buckets instead of being copied there."""
    if name == "ddp":
        return L.pytorch.strategies.DDPStrategy(broadcast_buffers=False, gradient_as_bucket_view=True)
    return name


def _trainer(config: dict, run_dir: Path, callbacks: list) -> L.Trainer:
    settings = config["trainer"]
    callbacks = [*callbacks, SharedMemoryAllReduce(bool(settings["shared_memory_allreduce"]))]
    return L.Trainer(
        accelerator=settings["accelerator"], devices=settings["devices"], num_nodes=settings["num_nodes"],
        strategy=_strategy(settings["strategy"]), max_epochs=settings["max_epochs"], max_time=settings["max_time"],
        gradient_clip_val=settings["gradient_clip_val"], precision=settings["precision"],
        log_every_n_steps=settings["log_every_n_steps"], check_val_every_n_epoch=settings["check_val_every_n_epoch"],
        enable_progress_bar=settings["progress_bar"], enable_model_summary=False, callbacks=callbacks,
        logger=_logger(config, run_dir), default_root_dir=str(run_dir),
        inference_mode=False,  # validation and test need autograd for forces
        use_distributed_sampler=False,  # the data module shares out every epoch among the ranks itself
    )


def quiet_lightning() -> None:
    """Keep a run's output to what matters: no deprecation chatter (Lightning vs torch 2.13 internals) and no
    "GPU available"/tips lines. Call it after importing Lightning, which sets up its loggers on import."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # DDP: per-epoch training loss is rank 0's own (syncing it would cost an all-reduce per step), and DDP's
    # note on gradient strides is about speed, not correctness.
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")
    warnings.filterwarnings("ignore", message=".*Grad strides do not match bucket view strides.*")
    # pykinml refuses a run directory that holds another run, so a non-empty checkpoints/ is a resumed run's.
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def print_metrics(metrics: dict) -> None:
    """The final errors of each target, in kcal/mol and meV/atom (energies) and kcal/mol/Å (forces)."""
    for split in ("val", "test"):
        values = metrics.get(split) or {}
        names = sorted({key.split("/")[0] for key in values if "/" in key})
        for name in names:
            line = f"{split:>4} {name}: energy RMSE {values[f'{name}/energy_rmse_kcal_mol']:.3f} kcal/mol " \
                   f"({values[f'{name}/energy_rmse_mev_atom']:.2f} meV/atom), MAE {values[f'{name}/energy_mae_kcal_mol']:.3f} kcal/mol"
            if f"{name}/force_rmse_kcal_mol_a" in values:
                line += f"; force RMSE {values[f'{name}/force_rmse_kcal_mol_a']:.3f} kcal/mol/Å, MAE {values[f'{name}/force_mae_kcal_mol_a']:.3f}"
            if f"{name}/stress_rmse_gpa" in values:
                line += f"; stress RMSE {values[f'{name}/stress_rmse_gpa']:.3f} GPa, MAE {values[f'{name}/stress_mae_gpa']:.3f}"
            print(line, flush=True)


def _terminated(trainer: L.Trainer, run_dir: Path) -> str:
    """What a process stopped by SIGTERM says: where it stopped and what to resume from."""
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = (f"{last} holds the last finished epoch; resume with ckpt_path={last}" if last.is_file()
              else "no epoch had finished, so there is no checkpoint to resume from")
    return (f"process {trainer.global_rank} stopped by SIGTERM after {trainer.global_step} training steps "
            f"(epoch {trainer.current_epoch}); {resume}")


def train(cfg: DictConfig | dict, progress: bool | None = None, callbacks: list | None = None) -> RunResult:
    """Run training as ``cfg`` (a composed, validated config) says; returns where it wrote and its metrics.

    ``callbacks``: extra Lightning callbacks (e.g. timing, custom logging) added to pykinml's own.
    """
    config = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    torch.set_num_threads(int(config["trainer"]["threads"]))
    keep_freed_memory()  # every process: a step allocates the same multi-MiB Jacobian temporaries each batch
    fidelity, levels = config["fidelity"]["name"], list(config["data"]["levels"])
    Task = task_class(fidelity)
    specs = Task.target_specs(levels)
    run_dir = _run_dir(config)
    resume, start = config["ckpt_path"], config["init_from"]
    if resume is not None and start is not None:
        raise PykinmlError("give ckpt_path (resume) or init_from (start from weights), not both")
    checkpoint = None
    for option, path in (("ckpt_path", resume), ("init_from", start)):
        if path is not None:
            checkpoint = load_checkpoint(path, option)
            check_compatible(checkpoint, config, option, path, resume=option == "ckpt_path")
    forces = bool(config["model"]["forces"])
    data_config = config["data"]
    engine = open_engine(data_config["db"])
    data = load_training_data(
        engine, levels, specs, fidelity, data_config["names"], data_config["split"], data_config["split_fractions"],
        int(config["seed"]), forces, bool(config["model"].get("stress", False)),
    )
    params = _aev_params(config, data, checkpoint)
    L.seed_everything(int(config["seed"]), workers=True, verbose=False)
    task = Task(config, params.to_dict(), levels)
    if start is not None:
        state = {key[len("model."):]: value for key, value in checkpoint["state_dict"].items() if key.startswith("model.")}
        try:
            task.model.load_state_dict(state)
        except RuntimeError as exc:
            raise PykinmlError(f"init_from={start}: incompatible checkpoint ({str(exc).splitlines()[0]})") from None
    elif resume is None:
        task.set_sae(data.fit_sae(params.atomic_numbers))
    show_progress = config["trainer"]["progress_bar"] if progress is None else progress
    datamodule = PotentialDataModule(
        data, params, forces=forces, force_mode=config["model"]["force_mode"], dtype=config["aev"]["dtype"],
        batch_size=int(data_config["batch_size"]), eval_batch_size=int(data_config["eval_batch_size"]),
        seed=int(config["seed"]), cache_dir=config["cache_dir"], precompute_workers=int(config["precompute_workers"]),
        progress=show_progress, high_level_repeats=int(data_config["high_level_repeats"]),
        stress=bool(config["model"].get("stress", False)),
    )
    own, best = _callbacks(config, run_dir)
    record = ProcessRecord()
    callbacks = own + [record] + list(callbacks or [])
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "config.yaml").exists():
        write_atomically(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config)))
    trainer = _trainer(config, run_dir, callbacks)
    with shared_run_dir(run_dir):
        try:
            trainer.fit(task, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        except SIGTERMException:
            raise TrainingTerminated(_terminated(trainer, run_dir)) from None
    best_path = Path(best.best_model_path or run_dir / "checkpoints" / "last.ckpt")
    metrics: dict = {"fidelity": fidelity, "levels": levels, "best_checkpoint": str(best_path),
                     "epochs": int(trainer.current_epoch), "processes": record.gather(trainer)}
    trainer.validate(task, datamodule=datamodule, ckpt_path=str(best_path), weights_only=True, verbose=False)
    metrics["val"] = task.results.get("val", {})
    if data.rows["test"].size:
        trainer.test(task, datamodule=datamodule, ckpt_path=str(best_path), weights_only=True, verbose=False)
        metrics["test"] = task.results.get("test", {})
    if trainer.is_global_zero:
        write_atomically(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        print_metrics(metrics)
        if trainer.world_size > 1:
            print(describe(metrics["processes"]), flush=True)
        shown = best_path.relative_to(run_dir.resolve()) if best_path.is_relative_to(run_dir.resolve()) else best_path
        print(f"run directory: {run_dir}  (best checkpoint: {shown})")
    return RunResult(run_dir=run_dir, best_checkpoint=best_path, metrics=metrics)


__all__ = ["RunResult", "print_metrics", "train"]
