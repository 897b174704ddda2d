"""Training callbacks: the seed's accuracy log, sample grids of every class prompt, a plot of
the training curves, and logs written out with every checkpoint."""

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from diffusion_lit.pipeline import write_class_grid


class AccuracyLog(L.Callback):
    """Writes ``Epoch#<i> : Accuracy ≈ <x>`` (the epoch's train pseudo-accuracy) per epoch to a
    text file, as the seed's training loop does. The lines are kept in checkpoints and the file
    is rewritten whole each epoch, so a resumed run lists every epoch exactly once. Only rank 0
    writes; the value is already synced."""

    def __init__(self, path: str | Path, metric: str = "train/pseudo_acc"):
        self.path, self.metric = Path(path), metric
        self.lines: dict[int, str] = {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        value, epoch = float(trainer.callback_metrics[self.metric]), trainer.current_epoch
        self.lines[epoch] = f"Epoch#{epoch} : Accuracy ≈ {value:.4f}"
        if trainer.is_global_zero:
            text = "".join(self.lines[epoch] + "\n" for epoch in sorted(self.lines))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(self.path)  # atomic: a kill mid-write leaves the previous file

    def state_dict(self) -> dict:
        return {"lines": self.lines}

    def load_state_dict(self, state_dict: dict) -> None:
        self.lines = dict(state_dict["lines"])


def warmup_ema(decay: float):
    """The EMA update with a warm-up: after n updates the decay is min(decay, (1 + n)/(10 + n))."""

    def update(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = ((1 + n) / (10 + n)).clamp(max=decay)  # a tensor op: no host sync per parameter
        return d * averaged + (1 - d) * current  # (also right for constant bool buffers)

    return update


class FlushLogsOnCheckpoint(L.Callback):
    """Writes the loggers' buffered rows whenever a checkpoint is saved. A CSVLogger otherwise
    writes ``metrics.csv`` every 100 steps, so a run killed later would lose rows logged before
    its checkpoint, which the resumed run does not log again."""

    def on_save_checkpoint(self, trainer: L.Trainer, *args) -> None:
        for logger in trainer.loggers:
            logger.save()


class WarmupEMA(WeightAveraging):
    """An exponential moving average of the weights, updated every step, with a warmed-up decay.

    Hand-written over Lightning's ``WeightAveraging`` (which does the swapping for validation,
    checkpointing and DDP) because its ``EMAWeightAveraging`` keeps the decay fixed: then for the
    first ~1/(1 − decay) steps the average is dominated by the random initial weights, which
    ruins the samples of short runs.
    """

    def __init__(self, decay: float = 0.999, **kwargs):
        super().__init__(avg_fn=warmup_ema(decay), **kwargs)


def averaged_module(trainer: L.Trainer, pl_module: L.LightningModule) -> L.LightningModule:
    """The EMA copy of the module kept by Lightning's weight-averaging callback, if one runs."""
    for callback in trainer.callbacks:
        if isinstance(callback, WeightAveraging) and callback._average_model is not None:
            return callback._average_model.module  # no public accessor for the averaged copy
    return pl_module


class SampleGrid(L.Callback):
    """Samples a fixed-seed grid, one row per class prompt, with the EMA weights when they are
    kept, to ``<out_dir>/epoch_<NNN>.png`` every ``every_n_epochs`` (0: never) and to
    ``<out_dir>/final.png`` when training ends; logs each grid to wandb when that logger is on."""

    def __init__(
        self,
        out_dir: str | Path,
        every_n_epochs: int = 0,
        num_per_class: int = 8,
        sampler: str = "ddpm",
        steps: int = 100,
        guidance_scale: float = 1.5,
        seed: int = 0,
    ):
        self.out_dir, self.every_n_epochs = Path(out_dir), every_n_epochs
        self.num_per_class, self.sampler, self.steps = num_per_class, sampler, steps
        self.guidance_scale, self.seed = guidance_scale, seed

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.every_n_epochs and (epoch + 1) % self.every_n_epochs == 0:
            self.write(trainer, pl_module, f"epoch_{epoch:03d}.png")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, pl_module, "final.png")

    @rank_zero_only
    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str) -> Path:
        path = write_class_grid(
            averaged_module(trainer, pl_module),
            self.out_dir / name,
            self.num_per_class,
            self.sampler,
            self.steps,
            self.guidance_scale,
            self.seed,
        )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("samples", [str(path)], step=trainer.global_step)
        return path


class TrainingCurves(L.Callback):
    """Plots loss and pseudo-accuracy per epoch (train and val) to a PNG when training ends.
    The history is kept in checkpoints, so a resumed run plots all its epochs."""

    METRICS = ("train/loss", "val/loss", "train/pseudo_acc", "val/pseudo_acc")

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.history: dict[str, list[tuple[int, float]]] = {m: [] for m in self.METRICS}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name in self.METRICS:
            if name in trainer.callback_metrics:
                value = float(trainer.callback_metrics[name])
                self.history[name].append((trainer.current_epoch, value))

    @rank_zero_only
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, kind in zip(axes, ["loss", "pseudo_acc"], strict=True):
            for stage in ["train", "val"]:
                points = self.history[f"{stage}/{kind}"]
                if points:
                    ax.plot(*zip(*points, strict=True), marker=".", label=stage)
            ax.set_xlabel("epoch")
            ax.set_title("MSE(ε̂, ε)" if kind == "loss" else "pseudo-accuracy 1 − MSE(x̂₀, x₀)")
            ax.legend()
        axes[0].set_yscale("log")
        fig.tight_layout()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(self.path, dpi=100)
        plt.close(fig)

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = {m: [tuple(p) for p in v] for m, v in state_dict["history"].items()}
