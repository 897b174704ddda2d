"""The LightningModule: the seed's DDPM training step around a :class:`DiffusionModel`, its
metrics, the optimizer, and what a resumed run needs to carry on exactly."""

from collections.abc import Callable
from contextlib import nullcontext

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import MeanSquaredError

from diffusion_lit import checks
from diffusion_lit.diffusion.model import DiffusionModel
from diffusion_lit.errors import UserError
from diffusion_lit.modelfile.spec import ModelSpec
from diffusion_lit.models.layers import kept_prompts
from diffusion_lit.text import TextEmbedding, TextEncoder
from diffusion_lit.training.replay import Replay

EPOCH_METRICS = ("train_loss", "train_acc")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


class PseudoAccuracy(MeanSquaredError):
    """The seed's pseudo-accuracy, 1 − MSE(x̂_0, x_0), averaged over every pixel seen; with
    x̂_0 in [-1, 1] it lies in [-3, 1]."""

    def compute(self) -> torch.Tensor:
        return 1 - super().compute()


class NonFiniteLoss(UserError, FloatingPointError):
    """The training loss became NaN or infinite."""


NO_STEP = 2**62  # "no non-finite loss yet", larger than any step


class DiffusionModule(L.LightningModule):
    """Trains a :class:`DiffusionModel` with the DDPM objective, conditioned on its training
    prompts.

    ``spec`` is the model as plain data (:mod:`diffusion_lit.modelfile.spec`), the module's only
    hyperparameter, so a checkpoint's ``hyper_parameters`` rebuild the model without running
    anything named in the file; ``model`` is built from it (with the UNet the training config
    built). The model's modules are this module's children under their own names (``net``,
    ``schedule``, ``prompts``): checkpoints keep the keys they always had. ``optimizer`` (a
    partial taking ``params``), ``lr_scheduler`` (a partial taking the optimizer and a function
    giving the number of steps), ``min_snr_gamma`` (the loss weighting), ``text_noise`` (see
    :meth:`caption_text`), ``channels_last``, ``compile`` (in ``compile_mode``) and ``seed`` are
    training options, not part of the model.
    """

    def __init__(
        self,
        spec: ModelSpec,
        model: DiffusionModel,
        optimizer: Callable,
        lr_scheduler: Callable | None = None,
        min_snr_gamma: float | None = None,
        text_noise: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str = "default",
        seed: int = 0,
    ):
        super().__init__()
        checks.real("min_snr_gamma", min_snr_gamma, 0, None, above=True, optional=True)
        checks.real("text_noise", text_noise, 0, None)
        checks.one_of("compile_mode", compile_mode, COMPILE_MODES)
        self.seed = checks.integer("seed", seed, 0, checks.MAX_SEED)
        self.spec = spec
        self.save_hyperparameters(spec.to_dict())
        self.model = model
        self.net, self.schedule, self.prompts = model.net, model.schedule, model.prompts
        if checks.flag("channels_last", channels_last):
            model.memory_format = torch.channels_last
            self.net.to(memory_format=torch.channels_last)
        if checks.flag("compile", compile):
            # in place: parameter names, and so checkpoints, stay the same
            self.net.compile(mode=compile_mode)
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.min_snr_gamma, self.text_noise = min_snr_gamma, text_noise
        self.train_loss, self.val_loss = MeanSquaredError(), MeanSquaredError()
        self.train_acc, self.val_acc = PseudoAccuracy(), PseudoAccuracy()
        self.first_nonfinite_step: torch.Tensor | None = None
        # images of the classes a model being extended knew, mixed into every training batch
        self.replay: Replay | None = None

    def encode_prompts(self, encoder: TextEncoder) -> None:
        """Encode every distinct training prompt once; the result is saved with the weights."""
        self.prompts.fill(encoder)

    def caption_text(
        self,
        labels: torch.Tensor,
        rows: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> TextEmbedding:
        """The text embedding of a caption of each image, drawn at random among its own
        (``rows``: (B, K) positions in its class's captions; None: any of them). In training,
        with ``text_noise`` = σ > 0, each vector gets Gaussian noise of σ times its own norm
        (conditioning augmentation, as StackGAN's and Imagen's): the network then sees a
        neighbourhood of each prompt, not a point, which should carry over to phrasings near it."""
        width = self.prompts.where.shape[1] if rows is None else rows.shape[1]
        drawn = torch.randint(width, labels.shape, device=labels.device, generator=generator)
        positions = drawn if rows is None else rows.gather(1, drawn[:, None])[:, 0]
        text = self.prompts.lookup(labels, positions)
        if not (self.training and self.text_noise):
            return text

        def jitter(z: torch.Tensor) -> torch.Tensor:
            noise = torch.randn(z.shape, device=z.device, dtype=z.dtype, generator=generator)
            return z + self.text_noise * z.norm(dim=-1, keepdim=True) * noise / z.shape[-1] ** 0.5

        return TextEmbedding(jitter(text.pooled), jitter(text.tokens), text.mask)

    def model_step(
        self, batch, loss_metric, acc_metric, generator=None, replayed: int = 0
    ) -> torch.Tensor:
        """The seed's training step: corrupt x_0 at a random t, predict ε (or v or x_0), MSE
        against the truth, weighted by min-SNR-γ when set; the last ``replayed`` images' truth
        is the base model's prediction when the replay distills it. Updates the stage's loss
        (unweighted) and pseudo-accuracy metrics; returns the batch loss. Every random draw
        comes from ``generator`` (the global RNG when None)."""
        x0, labels, *rows = batch  # rows: each image's captions (absent: any of its class's)
        t = torch.randint(
            self.schedule.timesteps, (x0.shape[0],), device=x0.device, generator=generator
        )
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        x_t = self.schedule.add_noise(x0, noise, t)
        target = self.schedule.target(x0, noise, t)
        text = self.caption_text(labels, rows[0] if rows else None, generator)
        distill = bool(replayed) and self.replay.teacher is not None
        with kept_prompts(self.net) if distill else nullcontext([]) as keep:
            out = self.model.predict(x_t, t, text).float()
        if distill:
            target = self.replay.taught(target, x_t, t, text, keep[0] if keep else None, replayed)
        per_sample = F.mse_loss(out, target, reduction="none").flatten(1).mean(1)
        loss = (
            (per_sample * self.loss_weights(t)).mean() if self.min_snr_gamma else per_sample.mean()
        )
        loss_metric.update(out.detach(), target)
        # x̂_0 clipped to the data range, as the samplers clip it: unclipped, ε̂'s error at t ≈ T
        # is divided by √ᾱ_T (~1e-4 for the cosine β) and the average says nothing
        acc_metric.update(self.schedule.predict_x0(x_t, t, out.detach()).clamp(-1, 1), x0)
        return loss

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        """Min-SNR-γ (Hang et al. 2023, eq. 9): each timestep's loss weighted as if it predicted
        x_0 with weight min(SNR, γ), so the nearly clean steps, whose ε is easiest to fit, no
        longer dominate: min(SNR, γ)/SNR for ε, /(SNR + 1) for v, unchanged for x_0."""
        snr = self.schedule.snr(t)
        weights = snr.clamp(max=self.min_snr_gamma)
        divisor = {"eps": snr, "v": snr + 1, "x0": torch.ones_like(snr)}[self.schedule.prediction]
        return weights / divisor

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Every step's random draws (t, ε, templates, text dropout) depend only on (seed, rank,
        # epoch, batch): each rank draws its own, and a run resumed from a checkpoint draws what
        # an uninterrupted one would have (Lightning saves no RNG state).
        entropy = [self.seed, self.global_rank, self.current_epoch, batch_idx]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        # on a CPU, the one generator the step draws from: torch.manual_seed also queues a seed
        # for every other device type, 0.3 ms a step
        if self.device.type == "cpu":
            torch.default_generator.manual_seed(seed)
        else:
            torch.manual_seed(seed)

    def on_train_epoch_start(self) -> None:
        # not called when resuming mid-epoch, where the restored sums carry on; a checkpoint
        # from an epoch's end holds that epoch's sums, which must not
        self.train_loss.reset()
        self.train_acc.reset()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        replayed = 0
        if self.replay is not None:
            replayed = self.replay.extra(len(batch[0]))
            batch = self.replay.mix(batch)
        loss = self.model_step(batch, self.train_loss, self.train_acc, replayed=replayed)
        self._note_nonfinite(loss)
        if self._logs_now():
            self.log("loss", loss, prog_bar=True, logger=False)  # the live value
            self.log("train/loss", self.train_loss, on_step=False, on_epoch=True)
            self.log("train/pseudo_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def _logs_now(self) -> bool:
        """Every ``log_every_n_steps`` steps and at the last batch of the epoch or the run. The
        epoch's values are the metrics' own sums, updated every step, whichever steps log them;
        a log call took ~0.5 ms, 3 % of a quickstart step in three calls (bench/throughput.py)."""
        trainer = self.trainer
        return (
            self.global_step % trainer.log_every_n_steps == 0
            or trainer.is_last_batch
            or 0 < trainer.max_steps <= self.global_step + 1
        )

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self._stop_if_nonfinite()

    def _note_nonfinite(self, loss: torch.Tensor) -> None:
        """Remembers the first step whose loss was NaN or infinite, on the device: no host sync
        per step. :meth:`_stop_if_nonfinite` reads it every ``log_every_n_steps`` steps and
        before every checkpoint."""
        if self.first_nonfinite_step is None:
            self.first_nonfinite_step = torch.full((), NO_STEP, device=loss.device)
        bad = ~torch.isfinite(loss.detach())
        step = torch.where(bad, self.global_step, NO_STEP)
        self.first_nonfinite_step = torch.minimum(self.first_nonfinite_step, step)

    def _stop_if_nonfinite(self) -> None:
        """Stops every rank together (the check is all-reduced) once any rank saw a non-finite
        loss; called at the same step on all ranks."""
        if self.first_nonfinite_step is None:
            return
        step = self.trainer.strategy.reduce(self.first_nonfinite_step.clone(), reduce_op="min")
        if step < NO_STEP:
            raise NonFiniteLoss(
                f"The training loss is not finite (NaN or inf) at step {int(step)}; training "
                "stopped, and no checkpoint was written after that step, so checkpoints/last.ckpt "
                "holds good weights. Lower optimizer.lr, set trainer.gradient_clip_val=1.0 or use "
                "trainer.precision=32, then resume with ckpt_path=last."
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self._stop_if_nonfinite()  # never save weights a non-finite loss has updated
        # The epoch's running sums summed over ranks (a checkpoint holds rank 0's state only):
        # a run resumed mid-epoch logs the epoch values of an uninterrupted one.
        checkpoint["epoch_sums"] = {
            name: {
                key: self.trainer.strategy.reduce(value.clone(), reduce_op="sum").cpu()
                for key, value in getattr(self, name).metric_state.items()
            }
            for name in EPOCH_METRICS
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        for name, sums in checkpoint.get("epoch_sums", {}).items():
            metric = getattr(self, name)
            for key, value in sums.items():
                # rank 0 carries on with the sums of every rank, the others from zero
                value = value if self.global_rank == 0 else torch.zeros_like(value)
                setattr(metric, key, value.to(metric.device))

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        # The same t, ε and templates for a batch every epoch, so val/loss is comparable across
        # epochs and does not depend on what ran before.
        generator = torch.Generator(self.device).manual_seed(batch_idx)
        loss = self.model_step(batch, self.val_loss, self.val_acc, generator)
        self.log("val/loss", self.val_loss, prog_bar=True, on_step=False, on_epoch=True)
        self.log("val/pseudo_acc", self.val_acc, on_step=False, on_epoch=True)
        return loss

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        """The weights the optimizer trains: all of the UNet's, or its LoRA adapters' alone."""
        return [p for p in self.net.parameters() if p.requires_grad]

    def configure_optimizers(self):
        optimizer = self.optimizer(params=self.trained_parameters())
        if self.lr_scheduler is None:
            return optimizer
        # the step count is asked later, see diffusion_lit.optim.warmup_cosine
        scheduler = self.lr_scheduler(optimizer, lambda: self.trainer.estimated_stepping_batches)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
