"""The LightningModule shared by every fidelity mode: predictions, loss, metrics, optimizer and schedule.

A subclass only says which targets the model is trained on (:meth:`PotentialTask.target_specs`) and how
many chained network levels it has. Forces come from the cached Jacobian (F = −Σ_i ∂E/∂G_i · ∂G_i/∂x, the
contraction a scatter-add) or, with ``model.force_mode=autograd``, from autograd through the AEV.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from typing import Any

import lightning as L
import torch
from torch import Tensor

from pykinml.aev.jacobian import forces as contract_forces
from pykinml.aev.jacobian import pair_gradients, strain_derivative
from pykinml.aev.params import AEVParams
from pykinml.aev.strain import apply_strain, stress_from_strain_gradient
from pykinml.data.batches import Batch
from pykinml.data.targets import TargetSpec
from pykinml.errors import PykinmlError
from pykinml.nn.potential import ChainedPotential
from pykinml.tasks.losses import TaskWeights, squared_error
from pykinml.tasks.metrics import ErrorMetrics
from pykinml.tasks.optim import BudgetSchedule, build_optimizer, build_scheduler
from pykinml.units import EV_A3_GPA

_aev = importlib.import_module("pykinml.aev.compute")  # the module (its name is shadowed by the function)
SPLITS = ("train", "val", "test")
CHECKPOINT_FORMAT = 1


class PotentialTask(L.LightningModule):
    """Train a :class:`ChainedPotential` on the targets of one fidelity mode.

    ``config`` is the run's resolved configuration (plain dict), ``aev`` the AEV constants
    (:meth:`AEVParams.to_dict`), ``levels`` the database levels, low → high. Everything is saved as
    hyperparameters, so a checkpoint alone rebuilds the model (and loads with ``weights_only=True``).
    """

    fidelity = "base"

    def __init__(self, config: dict, aev: dict, levels: list[str]):
        super().__init__()
        self.save_hyperparameters()
        self.config, self.levels = config, list(levels)
        self.params = AEVParams.from_dict(aev)
        model = config["model"]
        loss = config["loss"]
        self.specs = self.target_specs(self.levels)
        self.forces = bool(model["forces"])
        self.stress = bool(model.get("stress", False))
        self.model = ChainedPotential(
            self.network_levels(len(self.specs)), self.params.n_elements, self.params.length,
            list(model["neurons"]), model["activations"], bool(model["bias"]),
        )
        self.weights = TaskWeights(len(self.specs), self.forces, loss["weighting"], float(loss["force_weight"]),
                                   self.stress, float(loss.get("stress_weight", 0.1)))
        self.per_atom = loss["energy"] == "per_atom"
        self.rmse = loss["kind"] == "rmse"
        self.metrics = torch.nn.ModuleDict({f"{split}_errors": ErrorMetrics([s.name for s in self.specs]) for split in SPLITS})
        self.results: dict[str, dict[str, float]] = {}
        self.schedule = None
        self._schedule_state: dict | None = None
        self._stepped_epoch = -1
        self._batch_losses: dict[str, tuple[Tensor | float, int]] = {}

    # --- what a fidelity mode defines -------------------------------------------------------------
    @classmethod
    def target_specs(cls, levels: list[str]) -> list[TargetSpec]:
        raise NotImplementedError

    @staticmethod
    def network_levels(n_targets: int) -> int:
        return 1

    # --- self atomic energies -----------------------------------------------------------------------
    def set_sae(self, sae) -> None:
        """Self atomic energies (T, n_elements) in eV, one row per target (fitted on the training split)."""
        sae = torch.as_tensor(sae, dtype=torch.float64)
        if sae.shape != self.model.sae.shape:
            raise PykinmlError(f"self atomic energies of shape {tuple(sae.shape)} do not fit the model's {tuple(self.model.sae.shape)}")
        self.model.sae.copy_(sae)

    # --- predictions ----------------------------------------------------------------------------------
    def predict_batch(self, batch: Batch, forces: bool, create_graph: bool = False) -> tuple[Tensor, Tensor | None]:
        """Energies (T, B) in eV (SAEs included, float64) and forces (T, N, 3) in eV/Å when ``forces``."""
        residual, predicted_forces, _ = self._forward(batch, forces, False, create_graph)
        return residual.double() + self.model.sae_energies(batch.species, batch.owner, len(batch)), predicted_forces

    def _forward(self, batch: Batch, forces: bool, stress: bool, create_graph: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Network energies (T, B) without the SAEs, in the model's dtype; forces (T, N, 3) and stress (T, B, 3, 3)
        in eV/Å³ when asked: from the cached Jacobian rows, or by autograd through the AEV of packed structures
        (under a strain, for stress)."""
        wrt: list[Tensor] = []
        if batch.structures is not None:
            structures = batch.structures
            positions, cells = structures.positions, structures.cells
            if forces:
                positions = positions.detach().requires_grad_(True)
                wrt.append(positions)
            strained_positions, strained_cells = positions, cells
            if stress:
                strain, strained_positions, strained_cells = apply_strain(positions, cells, batch.owner, len(batch))
                wrt.append(strain)
            aev, _ = _aev.compute(self.params, replace(structures, positions=strained_positions, cells=strained_cells))
        else:
            aev = batch.aev
        if not (forces or stress):
            return self.model(aev, batch.species, batch.owner, len(batch)), None, None
        # ∂E/∂G by the networks' hand-written backward (differentiable once more, for the loss on forces).
        residual, d_aev = self.model.energies_and_gradients(aev, batch.species, batch.owner, len(batch))
        if not create_graph:
            d_aev = d_aev.detach()
        level_forces, level_stress = [], []
        for level in range(residual.shape[0]):
            if batch.structures is not None:
                grads = torch.autograd.grad(aev, wrt, grad_outputs=d_aev[level], create_graph=create_graph, retain_graph=True)
                if forces:
                    level_forces.append(-grads[0])
                if stress:
                    level_stress.append(stress_from_strain_gradient(grads[-1], batch.structures.cells))
                continue
            # From the cache: ∂E/∂r of every stored pair, summed into forces and into the virial (forces alone
            # take one pass over the pairs, without keeping each pair's ∂E/∂r).
            pairs = pair_gradients(self.params, batch.species, d_aev[level], batch.jacobian) if stress else None
            if forces:
                level_forces.append(contract_forces(self.params, batch.species, d_aev[level], batch.jacobian, pairs))
            if stress:
                level_stress.append(stress_from_strain_gradient(
                    strain_derivative(batch.jacobian, pairs, batch.owner, len(batch)), batch.cells))
        return (residual, torch.stack(level_forces) if forces else None,
                torch.stack(level_stress) if stress else None)

    def _step(self, batch: Batch, split: str) -> Tensor:
        training = split == "train"
        with torch.enable_grad():
            residual, forces, stress = self._forward(batch, self.forces, self.stress, create_graph=training)
        # Residual targets (target − SAE sum) are formed in float64, where the totals are exact, and the
        # errors are the same for residuals as for totals.
        targets = torch.nan_to_num(batch.energies - self.model.sae_energies(batch.species, batch.owner, len(batch)))
        predicted = residual.detach().double()
        natoms = batch.natoms.to(residual.dtype)
        terms: dict[tuple[int, str], Tensor | None] = {}
        for t in range(len(self.specs)):
            mask = batch.energy_mask[t]
            terms[(t, "energy")] = self._reduce(
                squared_error(residual[t], targets[t].to(residual.dtype), mask, natoms if self.per_atom else None)
            )
            force_target = force_mask = None
            if self.forces:
                force_target, force_mask = torch.nan_to_num(batch.forces[t]), batch.force_mask[t]
                terms[(t, "forces")] = self._reduce(squared_error(forces[t], force_target, force_mask))
            stress_target = stress_mask = None
            if self.stress:  # the loss in GPa², the unit stress errors are read in (eV/Å³ would weigh ~1e-5)
                stress_target, stress_mask = torch.nan_to_num(batch.stress[t]), batch.stress_mask[t]
                terms[(t, "stress")] = self._reduce(
                    squared_error(stress[t] * EV_A3_GPA, stress_target * EV_A3_GPA, stress_mask)
                )
            self.metrics[f"{split}_errors"].update(
                t, predicted[t], targets[t], batch.natoms.double(), mask,
                forces[t] if self.forces else None, force_target, force_mask,
                stress[t] if self.stress else None, stress_target, stress_mask,
            )
        loss = self.weights(terms)
        self._add_batch_loss(split, loss.detach(), len(batch))
        return loss

    def _add_batch_loss(self, split: str, loss: Tensor, size: int) -> None:
        """Sum the epoch's batch losses here; Lightning's ``self.log`` costs ~1 ms a call, as much as a tenth of
        a training step, so a training step's loss goes to the logger (and the progress bar) only on the steps
        the logger writes anyway (every ``trainer.log_every_n_steps``)."""
        total, count = self._batch_losses.get(split, (0.0, 0))
        self._batch_losses[split] = (total + loss * size, count + size)
        trainer = self._trainer  # None when steps are taken by hand, without a Trainer
        if split == "train" and trainer is not None and (self.global_step + 1) % max(1, trainer.log_every_n_steps) == 0:
            self.log("train/batch_loss_step", loss, batch_size=size, prog_bar=True, on_step=True, on_epoch=False)

    def _log_batch_loss(self, split: str) -> None:
        """The epoch's mean batch loss: ``train/batch_loss_epoch`` (this process's), ``val/batch_loss`` and
        ``test/batch_loss`` (averaged over the processes)."""
        total, count = self._batch_losses.pop(split, (0.0, 0))
        if count:
            training = split == "train"
            self.log(f"{split}/batch_loss{'_epoch' if training else ''}", total / count, prog_bar=training,
                     on_step=False, on_epoch=True, sync_dist=not training)

    def _reduce(self, mse: Tensor | None) -> Tensor | None:
        if mse is None or not self.rmse:
            return mse
        return torch.sqrt(mse + 1e-12)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "test")

    # --- epoch ends: metrics in several units, and the monitored score ---------------------------------
    def _log_metrics(self, split: str) -> None:
        self._log_batch_loss(split)
        values = self.metrics[f"{split}_errors"].compute()
        self.metrics[f"{split}_errors"].reset()
        if not values:
            return
        values["loss"] = self.score(values)
        values = {f"{split}/{name}": value for name, value in values.items()}
        # torchmetrics already reduced the errors over all ranks. Only the monitored values go through
        # self.log (checkpointing, early stopping and the schedule read them there); the rest go straight
        # to the logger, which costs far less per value than Lightning's result collection.
        watched = {self.config.get("monitor", "val/loss"), f"{split}/loss"}
        self.log_dict({k: v for k, v in values.items() if k in watched}, prog_bar=False, sync_dist=True)
        if self.logger is not None and not self.trainer.sanity_checking:
            self.logger.log_metrics({k: v for k, v in values.items() if k not in watched}, step=self.global_step)
        self.results[split] = {name.split("/", 1)[1]: value for name, value in values.items()}

    def score(self, values: dict[str, float]) -> float:
        """The monitored loss: Σ_t (1 − w_f)·RMSE_E² + w_f·RMSE_F² (eV, or eV/atom with per-atom energy loss),
        plus w_s·RMSE_σ² (GPa) when trained on stress."""
        w = float(self.config["loss"]["force_weight"]) if self.forces else 0.0
        total = 0.0
        for spec in self.specs:
            energy = values.get(f"{spec.name}/energy_rmse_mev_atom" if self.per_atom else f"{spec.name}/energy_rmse_ev")
            if energy is not None:
                total += (1.0 - w) * (energy / (1000.0 if self.per_atom else 1.0)) ** 2
            force = values.get(f"{spec.name}/force_rmse_ev_a")
            if force is not None:
                total += w * force**2
            stress = values.get(f"{spec.name}/stress_rmse_gpa") if self.stress else None
            if stress is not None:
                total += self.weights.fixed["stress"] * stress**2
        return total

    def on_train_epoch_end(self) -> None:
        self._log_metrics("train")
        self._step_schedule(validated=False)  # epochs without validation still advance a fixed schedule

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")
        self._step_schedule(validated=True)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    # --- checkpoints: everything prediction needs, as plain data (loads with weights_only=True) ---------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["pykinml"] = {
            "format": CHECKPOINT_FORMAT,
            "fidelity": self.fidelity,
            "levels": list(self.levels),
            "elements": list(self.params.elements),
            "aev": self.params.to_dict(),
            "targets": [{"name": s.name, "level": s.level, "minus": s.minus} for s in self.specs],
            "sae": self.model.sae.tolist(),
            "config": self.config,
        }
        checkpoint["pykinml_schedule"] = None if self.schedule is None else self.schedule.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._schedule_state = checkpoint.get("pykinml_schedule")  # applied when the optimizer is built

    # --- optimisation ------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.config["optim"], self.model.parameters(), self.weights.parameters(),
                                    self.config["loss"].get("weight_lr"))
        self.schedule = build_scheduler(self.config["scheduler"], optimizer)
        if self.schedule is not None and self._schedule_state is not None:
            self.schedule.load_state_dict(self._schedule_state)
        return optimizer

    # The schedule is stepped here, right after the epoch's validation and before Lightning writes the
    # epoch's checkpoints, so last.ckpt holds the stepped schedule and a resumed run continues exactly
    # (Lightning steps epoch schedules after its checkpoint callbacks, which loses one step on resume).
    def _budget_used(self) -> float:
        """Fraction of the training budget used: wall-clock with ``trainer.max_time``, else epochs."""
        trainer = self.trainer
        timer = next((c for c in trainer.callbacks if isinstance(c, L.pytorch.callbacks.Timer)), None)
        if timer is not None and timer._duration:
            return timer.time_elapsed("train") / timer._duration
        return (self.current_epoch + 1) / max(1, trainer.max_epochs or 1)

    def _step_schedule(self, validated: bool) -> None:
        if self.schedule is None or self.trainer.sanity_checking or self.trainer.state.fn != "fit":
            return
        if self._stepped_epoch == self.current_epoch:
            return
        if isinstance(self.schedule, BudgetSchedule):
            self.schedule.step(self._budget_used())
        elif isinstance(self.schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
            split, _, name = self.config.get("monitor", "val/loss").partition("/")
            value = self.results.get(split, {}).get(name)
            if not validated or value is None:
                return
            self.schedule.step(value)
        else:
            self.schedule.step()
        self._stepped_epoch = self.current_epoch
