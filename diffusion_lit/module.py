"""The LightningModule: the seed's DDPM training step, its metrics, the optimizer, and sampling."""

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanSquaredError

from diffusion_lit.config import build
from diffusion_lit.samplers import ddpm_sample
from diffusion_lit.text import PromptBank, TextEncoder


class PseudoAccuracy(MeanSquaredError):
    """The seed's pseudo-accuracy, 1 − MSE(x̂_0, x_0), averaged over every pixel seen."""

    def compute(self) -> torch.Tensor:
        return 1 - super().compute()


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
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = build(net)
        self.schedule = build(schedule)
        self.prompts = PromptBank()
        self.train_loss, self.val_loss = MeanSquaredError(), MeanSquaredError()
        self.train_acc, self.val_acc = PseudoAccuracy(), PseudoAccuracy()

    def encode_prompts(self, encoder: TextEncoder) -> None:
        """Encode every class prompt once; the result is saved with the weights."""
        self.prompts.fill(encoder, self.hparams.class_prompts)

    def class_text(self, labels: torch.Tensor) -> torch.Tensor:
        """Pooled text embedding of each label's prompt, a random template per sample."""
        pooled = self.prompts.pooled  # (C, K, D)
        template = torch.randint(pooled.shape[1], labels.shape, device=labels.device)
        return pooled[labels, template]

    def model_step(self, batch, loss_metric, acc_metric, generator=None) -> torch.Tensor:
        """The seed's training step: corrupt x_0 at a random t, predict ε, MSE against the true ε.
        Updates the stage's loss and pseudo-accuracy metrics; returns the batch loss."""
        x0, labels = batch
        t = torch.randint(
            self.schedule.timesteps, (x0.shape[0],), device=x0.device, generator=generator
        )
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        x_t = self.schedule.add_noise(x0, noise, t)
        noise_pred = self.net(x_t, t, self.class_text(labels)).float()
        loss = F.mse_loss(noise_pred, noise)
        loss_metric.update(noise_pred.detach(), noise)
        acc_metric.update(self.schedule.predict_x0(x_t, t, noise_pred.detach()), x0)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self.model_step(batch, self.train_loss, self.train_acc)
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
        self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, guidance_scale: float
    ) -> torch.Tensor:
        """Classifier-free guidance: ε = ε_uncond + w · (ε_cond − ε_uncond), with the conditional
        and unconditional (zero-text) passes batched together."""
        eps_cond, eps_uncond = self.net(
            torch.cat([x, x]), torch.cat([t, t]), torch.cat([text, torch.zeros_like(text)])
        ).chunk(2)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    @torch.no_grad()
    def generate(
        self,
        text: torch.Tensor,
        guidance_scale: float = 3.0,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        progress: bool = True,
    ) -> torch.Tensor:
        """One image per row of ``text`` (pooled embeddings, (N, D)); returns (N, C, H, W) in
        [-1, 1]. The starting noise comes from ``generator`` on the CPU, so seeds are portable."""
        was_training = self.net.training
        self.net.eval()
        shape = (text.shape[0], self.net.in_channels, self.net.image_size, self.net.image_size)
        x = torch.randn(shape, generator=generator).to(self.device)
        text = text.to(self.device, x.dtype)
        images = ddpm_sample(
            lambda x_t, t: self.guided_noise(x_t, t, text, guidance_scale),
            self.schedule,
            x,
            steps=steps,
            generator=generator,
            progress=progress,
        )
        self.net.train(was_training)
        return images

    def class_grid_text(self, num_per_class: int) -> torch.Tensor:
        """Every class's first prompt, ``num_per_class`` times each: (C · n, D)."""
        return self.prompts.pooled[:, 0].repeat_interleave(num_per_class, dim=0)
