"""Training callbacks of our own (Lightning provides checkpointing, early stopping and the LR monitor)."""

from __future__ import annotations

import lightning as L


class LearningRateFloor(L.Callback):
    """Stop training once every learning rate has fallen below ``floor`` (the plateau schedule has converged)."""

    def __init__(self, floor: float):
        self.floor = float(floor)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        rates = [group["lr"] for optimizer in trainer.optimizers for group in optimizer.param_groups]
        if rates and max(rates) < self.floor:
            trainer.should_stop = True
            print(f"pykinml-train: learning rate {max(rates):.3g} fell below the floor {self.floor:g}; stopping")
