"""The LightningModule: the seed's DDPM training step, its metrics, the optimizer, and sampling."""

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanSquaredError

from diffusion_lit.config import build
from diffusion_lit.errors import UserError
from diffusion_lit.samplers import run_sampler
from diffusion_lit.text import PromptBank, TextEmbedding, TextEncoder


class PseudoAccuracy(MeanSquaredError):
    """The seed's pseudo-accuracy, 1 − MSE(x̂_0, x_0), averaged over every pixel seen."""

    def compute(self) -> torch.Tensor:
        return 1 - super().compute()


class NonFiniteLoss(UserError, FloatingPointError):
    """The training loss became NaN or infinite."""


class DiffusionModule(L.LightningModule):
    """A noise-prediction network trained with the DDPM objective, conditioned on class prompts.

    ``net``, ``schedule`` and ``optimizer`` are Hydra configs (dicts with ``_target_``), saved as
    hyperparameters with ``text_encoder`` and the class prompts, so a checkpoint rebuilds the
    model on its own. The encoded prompts are buffers in ``self.prompts``.
    """

    def __init__(
        self,
        net: dict,
        schedule: dict,
        optimizer: dict,
        text_encoder: dict,
        class_names: list[str],
        class_prompts: list[list[str]],
        channels_last: bool = False,
        compile: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = build(net)
        # NHWC layout: on GPUs with tensor cores, convolutions can skip layout transposes
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)
        if compile:
            self.net.compile()  # in place: parameter names, and so checkpoints, stay the same
        self.schedule = build(schedule)
        self.prompts = PromptBank()
        self.train_loss, self.val_loss = MeanSquaredError(), MeanSquaredError()
        self.train_acc, self.val_acc = PseudoAccuracy(), PseudoAccuracy()
        # the epoch's running sums go into checkpoints: a run resumed mid-epoch logs the same
        # epoch values as one that went straight through
        self.train_loss.persistent(True)
        self.train_acc.persistent(True)

    def encode_prompts(self, encoder: TextEncoder) -> None:
        """Encode every class prompt once; the result is saved with the weights."""
        self.prompts.fill(encoder, self.hparams.class_prompts)

    def class_text(self, labels: torch.Tensor) -> TextEmbedding:
        """The text embedding of each label's prompt, a random template per sample."""
        num_templates = self.prompts.pooled.shape[1]
        return self.prompts.lookup(labels, torch.randint_like(labels, num_templates))

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, text: TextEmbedding):
        x_t = x_t.contiguous(memory_format=self.memory_format)
        # the rest of the step (metrics, samplers) works in the default layout
        return self.net(x_t, t, text.pooled, text.tokens, text.mask).contiguous()

    def model_step(self, batch, loss_metric, acc_metric, generator=None) -> torch.Tensor:
        """The seed's training step: corrupt x_0 at a random t, predict ε, MSE against the true ε.
        Updates the stage's loss and pseudo-accuracy metrics; returns the batch loss."""
        x0, labels = batch
        t = torch.randint(
            self.schedule.timesteps, (x0.shape[0],), device=x0.device, generator=generator
        )
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        x_t = self.schedule.add_noise(x0, noise, t)
        noise_pred = self.predict_noise(x_t, t, self.class_text(labels)).float()
        loss = F.mse_loss(noise_pred, noise)
        loss_metric.update(noise_pred.detach(), noise)
        acc_metric.update(self.schedule.predict_x0(x_t, t, noise_pred.detach()), x0)
        return loss

    def on_train_epoch_start(self) -> None:
        # not called when resuming mid-epoch, where the restored sums carry on; a checkpoint
        # from an epoch's end holds that epoch's sums, which must not
        self.train_loss.reset()
        self.train_acc.reset()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self.model_step(batch, self.train_loss, self.train_acc)
        if not torch.isfinite(loss):  # before backward: the weights are still the last good ones
            raise NonFiniteLoss(
                f"The training loss is {loss.item()} at step {self.global_step} (epoch "
                f"{self.current_epoch}); training stopped and checkpoints/last.ckpt holds the last "
                "good weights. Lower optimizer.lr, set trainer.gradient_clip_val=1.0 or use "
                "trainer.precision=32, then resume with ckpt_path=last."
            )
        self.log("loss", loss, prog_bar=True, logger=False)  # the live per-step value
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True)
        self.log("train/pseudo_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        # The same t and ε for a batch every epoch, so val/loss is comparable across epochs.
        generator = torch.Generator(self.device).manual_seed(batch_idx)
        loss = self.model_step(batch, self.val_loss, self.val_acc, generator)
        self.log("val/loss", self.val_loss, prog_bar=True, on_step=False, on_epoch=True)
        self.log("val/pseudo_acc", self.val_acc, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return build(self.hparams.optimizer)(params=self.net.parameters())

    # -- sampling ---------------------------------------------------------------------------

    def guided_noise(
        self, x: torch.Tensor, t: torch.Tensor, text: TextEmbedding, guidance_scale: float
    ) -> torch.Tensor:
        """Classifier-free guidance: ε = ε_uncond + w · (ε_cond − ε_uncond), with the conditional
        and unconditional (null-prompt) passes batched together."""
        both = text.cat(text.null())
        eps_cond, eps_uncond = self.predict_noise(torch.cat([x, x]), torch.cat([t, t]), both).chunk(
            2
        )
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    @torch.no_grad()
    def generate(
        self,
        text: TextEmbedding,
        guidance_scale: float = 3.0,
        sampler: str = "ddpm",
        steps: int | None = None,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        progress: bool = True,
    ) -> torch.Tensor:
        """One image per prompt in ``text``; returns (N, C, H, W) in [-1, 1]. The starting noise
        comes from ``generator`` on the CPU, so a seed gives the same images on any device."""
        was_training = self.net.training
        self.net.eval()
        shape = (len(text), self.net.in_channels, self.net.image_size, self.net.image_size)
        x = torch.randn(shape, generator=generator).to(
            self.device, memory_format=self.memory_format
        )
        text = text.map(lambda z: z.to(self.device))
        images = run_sampler(
            sampler,
            lambda x_t, t: self.guided_noise(x_t, t, text, guidance_scale),
            self.schedule,
            x,
            steps,
            generator,
            eta,
            progress,
        )
        self.net.train(was_training)
        return images

    def class_grid_text(self, num_per_class: int) -> TextEmbedding:
        """Every class's first prompt, ``num_per_class`` times each (C · n prompts)."""
        classes = torch.arange(self.prompts.pooled.shape[0], device=self.device)
        classes = classes.repeat_interleave(num_per_class)
        return self.prompts.lookup(classes, torch.zeros_like(classes))
