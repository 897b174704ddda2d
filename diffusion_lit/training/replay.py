"""Against forgetting: images of the classes a model knew that the data it is extended with
lacks, mixed into every training batch. ``generated``: the model's own samples of them, drawn
once before training, each with the caption it was drawn for (DreamBooth's prior preservation,
generative replay); ``data``: their real images, when the user still has them. With a
``teacher`` (``replay.distill``), a replayed image's target is the base model's prediction at the
same noisy image, timestep and prompt, not the noise drawn (generative distillation, Masip et al.
2024): the new model learns the base's whole denoising function around each replayed image, not
the way back to that one image."""

from dataclasses import dataclass

import torch

from diffusion_lit.diffusion.guidance import Guidance
from diffusion_lit.diffusion.model import DiffusionModel
from diffusion_lit.diffusion.options import SamplingOptions
from diffusion_lit.text import TextEmbedding

MODES = ("generated", "data", "none")


@dataclass
class Replay:
    """Images (N, C, H, W) in [−1, 1], their classes (N,) and caption positions (N, K) in the
    training's caption table, the share of every training batch they make up, and the base
    model whose predictions are their targets (None: the noise drawn is, as for new images)."""

    images: torch.Tensor
    labels: torch.Tensor
    rows: torch.Tensor
    fraction: float
    teacher: DiffusionModel | None = None

    def __post_init__(self):
        if self.teacher is not None:  # frozen once here, not on every step
            self.teacher.net.eval().requires_grad_(False)

    def extra(self, batch_size: int) -> int:
        """How many replayed images a batch of ``batch_size`` new ones gets."""
        return round(batch_size * self.fraction / (1 - self.fraction))

    def mix(self, batch):
        """The batch with :meth:`extra` replayed images appended, drawn at random (from the
        global RNG, which the training step seeds per step: a resumed run draws the same)."""
        x0, labels, rows = batch
        if self.images.device != x0.device:
            self.images, self.labels, self.rows = (
                t.to(x0.device) for t in (self.images, self.labels, self.rows)
            )
        pick = torch.randint(len(self.labels), (self.extra(len(x0)),), device=x0.device)
        width = max(rows.shape[1], self.rows.shape[1])

        def widened(r: torch.Tensor) -> torch.Tensor:  # a row repeats to any width
            return r[:, torch.arange(width, device=r.device) % r.shape[1]]

        return (
            torch.cat([x0, self.images[pick].to(x0.dtype)]),
            torch.cat([labels, self.labels[pick]]),
            torch.cat([widened(rows), widened(self.rows[pick])]),
        )

    @torch.no_grad()
    def taught(
        self,
        target: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        text: TextEmbedding,
        keep: torch.Tensor | None,
        n: int,
    ) -> torch.Tensor:
        """``target`` with its last ``n`` rows (the images :meth:`mix` appended) replaced by the
        teacher's prediction for the same x_t, t and prompt, dropped to the null prompt where
        ``keep`` (the trained network's conditional dropout of the whole batch) dropped it:
        the unconditional prediction that guidance needs is distilled too."""
        if n == 0:
            return target
        teacher = self.teacher.to(x_t.device)
        seen = text.last(n, None if keep is None else keep[-n:])
        taught = teacher.predict(x_t[-n:], t[-n:], seen)
        return torch.cat([target[:-n], taught.to(target.dtype)])


@torch.no_grad()
def generated(
    model: DiffusionModel,
    guidance: Guidance,
    classes: list[int],
    class_prompts: list[list[str]],
    per_class: int,
    options: SamplingOptions,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``per_class`` samples of each of ``model``'s ``classes``, each drawn with ``guidance``
    for one of its class's captions at random (guided beyond the class prompt as the model
    samples); their
    labels, and each caption's position in ``class_prompts`` (the training's table, whose rows
    start with the model's own captions)."""
    generator = torch.Generator().manual_seed(options.seed)
    bank = model.prompts
    picks = []
    for c in classes:
        own = list(dict.fromkeys(bank.class_prompts[c]))
        for k in torch.randint(len(own), (per_class,), generator=generator).tolist():
            picks.append((c, bank.class_prompts[c].index(own[k]), own[k]))
    labels = torch.tensor([c for c, _, _ in picks])
    positions = torch.tensor([k for _, k, _ in picks])
    on = model.device
    text = bank.lookup(labels.to(on), positions.to(on))
    plain = bank.lookup(labels.to(on), torch.zeros_like(positions).to(on))  # the class prompts
    images = model.generate(text, guidance, options, progress=False, base=plain)
    rows = torch.tensor([[class_prompts[c].index(p)] for c, _, p in picks])
    return images * 2 - 1, labels, rows
