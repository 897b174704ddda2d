"""Training callbacks: the seed's accuracy log, sample grids of every class prompt, a plot of
the training curves, and logs written out with every checkpoint."""

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.optim.swa_utils import AveragedModel

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


class WarmupEMAModel(AveragedModel):
    """An exponential moving average of a model's weights whose decay warms up: after n updates
    it is min(decay, (1 + n)/(10 + n)); the first update copies the weights.

    Hand-written over torch's ``AveragedModel`` (which keeps the copy and its ``n_averaged``)
    because its ``update_parameters`` reads ``n_averaged`` on the host twice per step and updates
    one tensor at a time: on a GPU that is a device sync and hundreds of kernel launches every
    step. Here the update is a few ``torch._foreach_*`` kernels and the decay stays a tensor."""

    def __init__(self, model: torch.nn.Module, decay: float, **kwargs):
        super().__init__(model, **kwargs)
        self.decay = decay

    def _tensors(self, model: torch.nn.Module) -> list[torch.Tensor]:
        buffers = list(model.buffers()) if self.use_buffers else []
        return [*model.parameters(), *buffers]

    @torch.no_grad()
    def update_parameters(self, model: torch.nn.Module) -> None:
        pairs = list(zip(self._tensors(self.module), self._tensors(model), strict=True))
        n = self.n_averaged
        weight = 1 - ((1 + n) / (10 + n)).clamp(max=self.decay)
        weight = torch.where(n == 0, torch.ones_like(weight), weight)  # the first: a copy
        floats = [(a, c.detach().to(a.device)) for a, c in pairs if a.is_floating_point()]
        if floats:
            averaged, current = (list(z) for z in zip(*floats, strict=True))
            step = torch._foreach_sub(current, averaged)
            torch._foreach_mul_(step, weight.to(averaged[0].device, averaged[0].dtype))
            torch._foreach_add_(averaged, step)
        for a, c in pairs:
            if not a.is_floating_point():  # counters and flags: the model's own
                a.copy_(c.detach())
        self.n_averaged += 1


class FlushLogsOnCheckpoint(L.Callback):
    """Writes the loggers' buffered rows whenever a checkpoint is saved. A CSVLogger otherwise
    writes ``metrics.csv`` every 100 steps, so a run killed later would lose rows logged before
    its checkpoint, which the resumed run does not log again."""

    def on_save_checkpoint(self, trainer: L.Trainer, *args) -> None:
        for logger in trainer.loggers:
            logger.save()


class WarmupEMA(WeightAveraging):
    """An exponential moving average of the weights, updated every step, with a warmed-up decay
    (:class:`WarmupEMAModel`). Lightning's ``WeightAveraging`` does the swapping for validation,
    checkpointing and DDP; its ``EMAWeightAveraging`` keeps the decay fixed, and then for the
    first ~1/(1 − decay) steps the average is dominated by the random initial weights, which
    ruins the samples of short runs.
    """

    def __init__(self, decay: float = 0.999, **kwargs):
        super().__init__(**kwargs)
        self.decay = decay

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # as WeightAveraging.setup, with the warm-up model
            self._average_model = WarmupEMAModel(
                pl_module, self.decay, device=self._device or pl_module.device,
                use_buffers=self._use_buffers,
            )  # fmt: skip


def averaged_module(trainer: L.Trainer, pl_module: L.LightningModule) -> L.LightningModule:
    """The EMA copy of the module kept by Lightning's weight-averaging callback, if one runs."""
    for callback in trainer.callbacks:
        if isinstance(callback, WeightAveraging) and callback._average_model is not None:
            return callback._average_model.module  # no public accessor for the averaged copy
    return pl_module


class SampleGrid(L.Callback):
    """Samples a fixed-seed grid, one row per class prompt, with the EMA weights when they are
    kept, to ``<out_dir>/epoch_<NNN>.png`` every ``every_n_epochs`` (0: never) and to
    ``<out_dir>/final.png`` when training ends; logs each grid to wandb when that logger is on.
    ``guidance_scale`` None samples with the model's own guidance (its ``sampling``)."""

    def __init__(
        self,
        out_dir: str | Path,
        every_n_epochs: int = 0,
        num_per_class: int = 8,
        sampler: str = "ddpm",
        steps: int = 100,
        guidance_scale: float | None = None,
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
