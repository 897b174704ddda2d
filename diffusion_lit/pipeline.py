"""The Python sampling API: load a checkpoint once, turn prompts into images."""

import functools
import logging
import math
import re
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import save_image

from diffusion_lit.artifacts import load_module
from diffusion_lit.errors import UserError
from diffusion_lit.module import DiffusionModule
from diffusion_lit.samplers import StepCallback
from diffusion_lit.spec import build_component
from diffusion_lit.text import TextEmbedding, TextEncoder, most_similar

log = logging.getLogger(__name__)

# Below this cosine similarity to every training prompt (pooled text embeddings), a prompt is
# reported as unlike anything the model was trained on. Calibrated on MiniLM with the quickstart
# (bench/unfamiliar.py, bench/RESULTS.md): 97 % of the digits' held-out phrasings score ≥ 0.6
# (the three below, "number 1/2/one", include the one it draws worst), 90 % of Fashion-MNIST's,
# and 90 % and 100 % of unrelated requests score less.
UNFAMILIAR_BELOW = 0.6


def slugify(prompt: str) -> str:
    """'Draw a six!' → 'draw_a_six': lower case, runs outside a–z0–9 become one '_'."""
    return re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TextToImage:
    """Text-to-image sampling with classifier-free guidance::

        pipe = TextToImage.from_checkpoint("outputs/runs/<run>/checkpoints/last.ckpt")  # or export
        images = pipe(["Draw a six", "Draw a one"], num_images=4, seed=0)  # (2, 4, C, H, W)
        pipe.to_pil(images)[0][0].save("six.png")

    Class prompts stored in the checkpoint use their saved embeddings; any other prompt goes
    through the checkpoint's text encoder, loaded on first use, and is drawn as its nearest
    training prompt (``nearest_prompt=True``, logged) or from its own embedding. A prompt unlike
    every training prompt is still drawn, with a one-line warning naming the nearest one.
    """

    def __init__(self, module: DiffusionModule):
        self.module = module
        self._encoder: TextEncoder | None = None

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "auto", use_ema: bool = True
    ) -> "TextToImage":
        """Loads a training checkpoint (``.ckpt``) or an export folder, without running pickled
        code. ``use_ema`` picks a checkpoint's EMA weights (kept when trained with the EMA
        callback) or its raw trained weights; an export holds the weights it was exported with."""
        module = load_module(path, use_ema)
        return cls(module.to(resolve_device(device)))

    @property
    def class_prompts(self) -> list[str]:
        """The first prompt of every class the model was trained on."""
        return [prompts[0] for prompts in self.module.hparams.class_prompts]

    @property
    def training_prompts(self) -> dict[str, list[str]]:
        """Every prompt the model was trained on, by class name."""
        names, prompts = self.module.hparams.class_names, self.module.hparams.class_prompts
        return {name: list(dict.fromkeys(p)) for name, p in zip(names, prompts, strict=True)}

    def nearest(self, prompts: list[str], text: TextEmbedding | None = None):
        """For each prompt, the most similar training prompt and the cosine similarity of their
        pooled text embeddings."""
        text = self.embed(prompts) if text is None else text
        best, index = most_similar(text.pooled, self.module.prompts.pooled.flatten(0, 1))
        flat = [p for ps in self.module.hparams.class_prompts for p in ps]
        return [(flat[i], s) for i, s in zip(index.tolist(), best.tolist(), strict=True)]

    def unfamiliar(self, prompts: list[str], text: TextEmbedding | None = None) -> list[str]:
        """A line for each prompt unlike every training prompt, naming the nearest one."""
        found = dict(zip(prompts, self.nearest(prompts, text), strict=True))  # each prompt once
        return [
            f"{p!r} is not like any training prompt; nearest: {near!r} ({sim:.2f})"
            for p, (near, sim) in found.items()
            if sim < UNFAMILIAR_BELOW
        ]

    def drawn_as(self, prompts: list[str], text: TextEmbedding | None = None) -> list[str]:
        """Each prompt, or for one the model never trained on, its nearest training prompt."""
        trained = self.stored_prompts
        if all(p in trained for p in prompts):
            return prompts
        nearest = [near for near, _ in self.nearest(prompts, text)]
        return [p if p in trained else near for p, near in zip(prompts, nearest, strict=True)]

    @staticmethod
    def substitutions(prompts: list[str], drawn: list[str]) -> list[str]:
        """A line for each prompt drawn as another (:meth:`drawn_as`)."""
        pairs = dict(zip(prompts, drawn, strict=True))  # each prompt once
        return [f"{p!r} is drawn as the training prompt {d!r}" for p, d in pairs.items() if p != d]

    def warn_unfamiliar(self, prompts: list[str], text: TextEmbedding | None = None) -> list[str]:
        """Logs (and returns) :meth:`unfamiliar`'s lines."""
        notes = self.unfamiliar(prompts, text)
        for note in notes:
            log.warning(note)
        return notes

    @functools.cached_property
    def stored_prompts(self) -> dict[str, tuple[int, int]]:
        """Every training prompt and where its embedding is saved: (class, position)."""
        return {
            p: (c, k)
            for c, templates in enumerate(self.module.hparams.class_prompts)
            for k, p in enumerate(templates)
        }

    def embed(self, prompts: list[str]) -> TextEmbedding:
        """Text embeddings: the saved ones when every prompt is a class prompt, otherwise all
        prompts through the checkpoint's text encoder."""
        stored = self.stored_prompts
        if all(p in stored for p in prompts):
            index = torch.tensor([stored[p] for p in prompts], device=self.module.device)
            return self.module.prompts.lookup(index[:, 0], index[:, 1])
        if self._encoder is None:
            self._encoder = build_component(self.module.hparams, "text_encoder")
        return self._encoder.encode(prompts)

    def __call__(
        self,
        prompts: list[str] | None = None,
        num_images: int = 1,
        guidance_scale: float | None = None,
        sampler: str = "ddpm",
        steps: int | None = 100,
        eta: float = 0.0,
        seed: int = 0,
        batch_size: int = 256,
        progress: bool = True,
        timestep_spacing: str = "linspace",
        callback: StepCallback | None = None,
        nearest_prompt: bool = True,
        precision: str = "auto",
        guidance_interval: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """Images for each prompt (default: every class prompt), shape (P, N, C, H, W), in [0, 1].
        ``sampler`` is ddpm, ddim (noise level ``eta``) or dpmpp_2m, over ``steps`` timesteps
        (None: all T) spaced by ``timestep_spacing`` (linspace, leading or trailing). The same
        seed and batch size give the same images. The defaults are the sample CLI's; guidance
        left None is the model's own (:attr:`DiffusionModule.sampling`: what its training config
        or export chose for it, else 1.5 over the whole denoising).
        ``callback(done, total)`` runs after every denoising step of every batch (steps counted
        over all batches); raising in it stops the sampling. ``nearest_prompt`` conditions a
        prompt the model never trained on by the stored embedding of its most similar training
        prompt (pooled text embeddings, as :meth:`nearest`): a class-prompt model reads a
        rephrasing as the nearest prompt it knows more reliably than it reads the rephrasing's
        own embedding (bench/RESULTS.md); ``False`` conditions on the prompt's own embedding.
        ``precision``: ``32``, ``bf16-mixed`` (the network's passes in bfloat16 autocast), or
        ``auto``: bf16-mixed where the device computes bf16 natively
        (:meth:`DiffusionModule.generate`). ``guidance_interval`` (start, stop): guidance only
        that part of the way from noise (0) to image (1), the conditional prediction alone
        elsewhere (:meth:`DiffusionModule.guided_noise`)."""
        prompts = self.class_prompts if prompts is None else list(prompts)
        if not prompts:
            raise UserError("The prompt list is empty: give at least one prompt.")
        if num_images < 1:
            raise UserError(f"num_images must be at least 1, got {num_images}.")
        if guidance_scale is not None and not math.isfinite(guidance_scale):
            raise UserError(f"guidance_scale must be a finite number, got {guidance_scale}.")
        text = self.embed(prompts)
        self.warn_unfamiliar(prompts, text)
        drawn = self.drawn_as(prompts, text) if nearest_prompt else prompts
        for line in self.substitutions(prompts, drawn):
            log.info(line)
        text = text if drawn == prompts else self.embed(drawn)
        text = text.map(lambda z: z.repeat_interleave(num_images, dim=0))
        generator = torch.Generator().manual_seed(seed)
        chunks = [
            text.map(lambda z, i=i: z[i : i + batch_size]) for i in range(0, len(text), batch_size)
        ]

        def counted(k: int) -> StepCallback | None:  # batch k's steps, counted over all batches
            if callback is None:
                return None
            return lambda done, total: callback(k * total + done, len(chunks) * total)

        images = torch.cat(
            [
                self.module.generate(
                    chunk,
                    guidance_scale,
                    sampler,
                    steps,
                    eta,
                    generator,
                    progress,
                    timestep_spacing,
                    counted(k),
                    precision,
                    guidance_interval,
                )
                for k, chunk in enumerate(chunks)
            ]
        )
        images = ((images.float().cpu() + 1) / 2).clamp(0, 1)
        return images.view(len(prompts), num_images, *images.shape[1:])

    @staticmethod
    def to_pil(images: torch.Tensor) -> list[list[Image.Image]]:
        return [[to_pil_image(image) for image in row] for row in images]

    @staticmethod
    def save(images: torch.Tensor, prompts: list[str], out_dir: str | Path) -> Path:
        """Writes ``<out_dir>/<slug>/000.png, …`` per prompt and ``<out_dir>/grid.png`` (a row
        per prompt); returns the grid's path."""
        out_dir = Path(out_dir)
        try:
            for prompt, row in zip(prompts, images, strict=True):
                prompt_dir = out_dir / slugify(prompt)
                prompt_dir.mkdir(parents=True, exist_ok=True)
                for i, image in enumerate(row):
                    save_image(image, prompt_dir / f"{i:03d}.png")
            return save_grid(images, out_dir / "grid.png")
        except OSError as err:
            raise UserError(
                f"Cannot write images to {out_dir}: {err.strerror or err}. Pass out_dir=<a "
                "writable folder with free space>."
            ) from err


def save_grid(images: torch.Tensor, path: Path) -> Path:
    """Images (P, N, C, H, W) in [0, 1] as one PNG, a row per prompt."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.flatten(0, 1), path, nrow=images.shape[1])
    return path


def write_class_grid(
    module: DiffusionModule,
    path: Path,
    num_per_class: int = 8,
    sampler: str = "ddpm",
    steps: int = 100,
    guidance_scale: float | None = None,
    seed: int = 0,
) -> Path:
    """Samples every class prompt ``num_per_class`` times with a fixed seed and saves the grid
    (a row per class): the pictures of training runs and model cards. Guidance None is the
    model's own."""
    images = TextToImage(module)(
        None,
        num_images=num_per_class,
        guidance_scale=guidance_scale,
        sampler=sampler,
        steps=min(steps, module.schedule.timesteps),
        seed=seed,
        progress=False,
    )
    return save_grid(images, path)
