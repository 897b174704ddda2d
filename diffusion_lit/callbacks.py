"""Training callbacks: the seed's accuracy log and sample grids of every class prompt."""

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import save_image


class AccuracyLog(L.Callback):
    """Appends ``Epoch#<i> : Accuracy ≈ <x>`` (the epoch's train pseudo-accuracy) to a text file,
    as the seed's training loop does. Only rank 0 writes; the value is already synced."""

    def __init__(self, path: str | Path, metric: str = "train/pseudo_acc"):
        self.path, self.metric = Path(path), metric

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.metric])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(f"Epoch#{trainer.current_epoch} : Accuracy ≈ {value:.4f}\n")


class SampleGrid(L.Callback):
    """Samples a fixed-seed grid, one row per class prompt, to ``<out_dir>/final.png`` when
    training ends and to ``<out_dir>/epoch_<NNN>.png`` every ``every_n_epochs`` (0: never)."""

    def __init__(
        self,
        out_dir: str | Path,
        every_n_epochs: int = 0,
        num_per_class: int = 8,
        steps: int = 250,
        guidance_scale: float = 3.0,
        seed: int = 0,
    ):
        self.out_dir, self.every_n_epochs = Path(out_dir), every_n_epochs
        self.num_per_class, self.steps = num_per_class, steps
        self.guidance_scale, self.seed = guidance_scale, seed

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.every_n_epochs and (epoch + 1) % self.every_n_epochs == 0:
            self.write(trainer, pl_module, f"epoch_{epoch:03d}.png")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, pl_module, "final.png")

    @rank_zero_only
    def write(self, trainer: L.Trainer, pl_module, name: str) -> Path:
        text = pl_module.class_grid_text(self.num_per_class)
        generator = torch.Generator().manual_seed(self.seed)
        steps = min(self.steps, pl_module.schedule.timesteps)
        images = pl_module.generate(text, self.guidance_scale, steps, generator, progress=False)
        path = self.out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image((images.float() + 1) / 2, path, nrow=self.num_per_class)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("samples", [str(path)], step=trainer.global_step)
        return path
