"""Training callbacks: the seed's accuracy log, sample grids of every class, a plot of the
training curves, logs written out with every checkpoint, and how long the training will take."""

import logging
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from diffusion_lit import checks
from diffusion_lit.diffusion.options import SamplingOptions
from diffusion_lit.images import save_grid
from diffusion_lit.training.ema import averaged_module

log = logging.getLogger(__name__)


class TimeEstimate(L.Callback):
    """Says, a few steps in, how long the training will take on this machine: the steps left
    × the seconds a step took over ``steps`` steps after the first ``start`` (which warm up),
    so that a user is told, not surprised (a CPU without bf16 takes about twice as long).
    Validation and sample grids come on top."""

    def __init__(self, start: int = 5, steps: int = 20):
        self.start = checks.integer("start", start, 0, 10**6)
        self.steps = checks.integer("steps", steps, 1, 10**6)
        self.seen, self.began = 0, None

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        self.seen += 1  # batches of this fit (a resumed run counts from its own start)
        if self.seen == self.start:
            self.began = time.perf_counter()
        elif self.began is not None and self.seen == self.start + self.steps:
            per_step = (time.perf_counter() - self.began) / self.steps
            left = max(0, trainer.estimated_stepping_batches - trainer.global_step)
            if trainer.is_global_zero:
                log.info("Training will take about %s more on this machine: %d steps at %.3g s "
                         "a step (measured over %d steps), plus validation and sample grids.",
                         duration(left * per_step), left, per_step, self.steps)  # fmt: skip
            self.began = None


def duration(seconds: float) -> str:
    """``'4 min 10 s'``, ``'1 h 5 min'``, ``'12 s'``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


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


class FlushLogsOnCheckpoint(L.Callback):
    """Writes the loggers' buffered rows whenever a checkpoint is saved. A CSVLogger otherwise
    writes ``metrics.csv`` every 100 steps, so a run killed later would lose rows logged before
    its checkpoint, which the resumed run does not log again."""

    def on_save_checkpoint(self, trainer: L.Trainer, *args) -> None:
        for logger in trainer.loggers:
            logger.save()


class SampleGrid(L.Callback):
    """Samples a fixed-seed grid, a row per class (its first prompt), with the EMA weights when
    they are kept, to ``<out_dir>/epoch_<NNN>.png`` every ``every_n_epochs`` (0: never) and to
    ``<out_dir>/final.png`` when training ends; logs each grid to wandb when that logger is on.
    ``options`` are the sampling options (the config group ``sampling``; guidance None is the
    model's own)."""

    def __init__(
        self, out_dir: str | Path, every_n_epochs: int = 0, num_per_class: int = 8, **options
    ):
        self.out_dir = Path(out_dir)
        self.every_n_epochs = checks.integer("every_n_epochs", every_n_epochs, 0, 10**9)
        self.num_per_class = checks.integer("num_per_class", num_per_class, 1, 1024)
        self.options = SamplingOptions(**options)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.every_n_epochs and (epoch + 1) % self.every_n_epochs == 0:
            self.write(trainer, pl_module, f"epoch_{epoch:03d}.png")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, pl_module, "final.png")

    @rank_zero_only
    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str) -> Path:
        model = averaged_module(trainer, pl_module).model
        path = save_grid(
            model.sample_classes(
                self.num_per_class, self.options.guidance(pl_module.spec.guidance), self.options
            ),
            self.out_dir / name,
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
