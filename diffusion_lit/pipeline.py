"""The Python API: load a trained model once, turn prompts into images."""

import functools
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import save_image

from diffusion_lit.diffusion.guidance import Guidance
from diffusion_lit.diffusion.model import DiffusionModel, NonFiniteImage
from diffusion_lit.diffusion.options import SamplingOptions
from diffusion_lit.diffusion.samplers import StepCallback
from diffusion_lit.edit_images import EditInputs, edit_inputs
from diffusion_lit.errors import UserError
from diffusion_lit.images import save_grid
from diffusion_lit.modelfile.load import load_model
from diffusion_lit.modelfile.spec import ModelSpec
from diffusion_lit.text import TextEmbedding
from diffusion_lit.text.nearest import (
    NearestPrompt,
    nearest_of,
    nearest_prompts,
    substitution_notes,
    unfamiliar_notes,
)
from diffusion_lit.text.reading import Reading, RequestReader, whole


def slugify(prompt: str) -> str:
    """'Draw a six!' → 'draw_a_six': lower case, runs outside a–z0–9 become one '_'."""
    return re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")


# a file name may have 255 bytes; a prompt's folder keeps its first 60 characters and a hash
MAX_FOLDER_CHARS = 80


def prompt_folders(prompts: list[str]) -> list[str]:
    """A folder name for each prompt, unique among them: its slug (``'Draw a six!'`` →
    ``draw_a_six``), ``prompt`` for one without letters or digits, a long one cut short with a
    hash of the prompt, and ``-2``, ``-3``, … after a name already taken (the same prompt twice
    draws other images)."""
    names: list[str] = []
    for prompt in prompts:
        slug = slugify(prompt) or "prompt"
        if len(slug) > MAX_FOLDER_CHARS:
            slug = f"{slug[:60]}-{hashlib.sha256(prompt.encode()).hexdigest()[:8]}"
        name, n = slug, 1
        while name in names:
            n += 1
            name = f"{slug}-{n}"
        names.append(name)
    return names


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class Generated:
    """What :class:`TextToImage` returns: the images, and what it noted on the way."""

    # (P, N, C, H, W) in [0, 1]: N images for each of the P prompts (an edit: num_images for
    # each init image, in the inputs' order)
    images: torch.Tensor
    prompts: list[str]  # as asked
    drawn_as: list[str]  # what each prompt was drawn as: itself or its nearest training prompt
    guidance: Guidance  # what it sampled with: the options' or the model's own
    options: SamplingOptions  # what it sampled with (the model's own reading where not given)
    found: list[NearestPrompt] = field(default_factory=list)  # each prompt's nearest, if read
    readings: list[Reading] = field(default_factory=list)  # how requests were read, if they were
    edited: EditInputs | None = None  # what an edit started from (init images, mask)

    @property
    def unfamiliar(self) -> list[str]:
        """A line for each prompt unlike every training prompt, naming the nearest one."""
        return unfamiliar_notes(self.found)

    @property
    def substitutions(self) -> list[str]:
        """A line for each prompt drawn as another: how it was read (its class and words), or
        its nearest training prompt."""
        edit = [self.edited.note] if self.edited is not None and self.edited.note else []
        if self.readings:
            read = {r.prompt: r for r in self.readings if r.caption != r.prompt}
            return edit + [r.note() for r in read.values()]
        return edit + substitution_notes(self.found, self.options.nearest_prompt)


# images per prompt where none is asked for: a grid's row (an edit: one per picture)
IMAGES_PER_PROMPT = 16

# at most this many captions a list of a model's captions shows (prompts=list, the page): every
# caption of a model of ten classes, a few of each class of the emoji's thousands
LISTED = 1_000


class TextToImage:
    """Text-to-image sampling with classifier-free guidance::

        pipe = TextToImage.from_checkpoint("outputs/runs/<run>/checkpoints/last.ckpt")  # or export
        out = pipe(["Draw a six", "Draw a one"], num_images=4, seed=0)
        out.images.shape                        # (2, 4, C, H, W) in [0, 1]
        pipe.to_pil(out.images)[0][0].save("six.png")

    Training prompts are drawn from their saved embeddings; any other prompt goes through the
    model's text encoder, loaded on first use, and is drawn as its nearest training prompt
    (``nearest_prompt=True``), or else, by a model whose captions name attributes, as the
    caption saying its class and words (:mod:`~diffusion_lit.text.reading`), and by any other
    from its own embedding. The result says which prompt was drawn as which, and names each
    prompt unlike every training prompt.
    """

    def __init__(self, model: DiffusionModel, spec: ModelSpec):
        self.model, self.spec = model, spec

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "auto",
        use_ema: bool = True,
        adapters: list[str | Path] = (),
        adapter_weights: list[float] | None = None,
    ) -> "TextToImage":
        """Loads a training checkpoint (``.ckpt``) or an export folder, without running pickled
        code, with the LoRA ``adapters`` (folders) made for it folded in, each scaled by its
        weight (``adapter_weights``, default 1). ``use_ema`` picks a checkpoint's EMA weights
        (kept when trained with the EMA callback) or its raw trained weights; an export holds
        the weights it was exported with."""
        spec, model = load_model(path, use_ema, adapters, adapter_weights)
        return cls(model.to(resolve_device(device)), spec)

    @property
    def default_prompts(self) -> list[str]:
        """The first prompt of every class: what is drawn when no prompt is given."""
        return self.model.prompts.default_prompts

    @property
    def training_prompts(self) -> dict[str, list[str]]:
        """Every caption the model was trained on, by class name."""
        bank = self.model.prompts
        return {
            name: list(dict.fromkeys(p))
            for name, p in zip(bank.class_names, bank.class_prompts, strict=True)
        }

    @property
    def attributes(self) -> dict[str, list[str]]:
        """The words of each attribute its captions name (``thickness``: thin, thick)."""
        return self.spec.attributes

    @property
    def class_prompts(self) -> dict[str, list[str]]:
        """The captions that name no attribute, by class name: how it was taught each class."""
        words = [w for ws in self.attributes.values() for w in ws]
        return {
            name: [p for p in prompts if not any(w in p for w in words)]
            for name, prompts in self.training_prompts.items()
        }

    def listed(self, search: str | None = None) -> dict[str, tuple[list[str], int]]:
        """Each class's captions that name no attribute, as a list shows them: every one while
        the model has at most :data:`LISTED` of them, else a few of each class (a model of
        thousands of captions); with ``search``, those that say each of its words, at most
        :data:`LISTED` in all. Class name → (the captions shown, how many it has or matched)."""
        found = self.class_prompts
        if search is not None:
            wanted = [whole(w) for w in search.split()]
            found = {name: [p for p in ps if all(w.search(p.lower()) for w in wanted)]
                     for name, ps in found.items()}  # fmt: skip
            found = {name: ps for name, ps in found.items() if ps}
        total = sum(map(len, found.values()))
        if search is None and total > LISTED:
            return {name: (ps[:3], len(ps)) for name, ps in found.items()}
        shown, left = {}, LISTED
        for name, ps in found.items():
            shown[name], left = (ps[: max(left, 0)], len(ps)), left - len(ps)
        return shown

    def vocabulary(self, search: str | None = None) -> list[str]:
        """What the model was trained to draw (:meth:`listed`), a line a class and then a line
        an attribute."""
        listed = self.listed(search)
        lines = [
            f"{name}: " + " | ".join(ps) + (f" … ({n} in all)" if len(ps) < n else "")
            for name, (ps, n) in listed.items()
        ]
        if search is not None and not listed:
            lines.append(f"No training caption says {search!r}.")
        elif any(len(ps) < n for ps, n in listed.values()):
            lines.append("(a few of each class's captions: search them with "
                         "prompts=list search='<words>')" if search is None else
                         "(narrow the search to see the rest)")  # fmt: skip
        lines += [f"{attribute}: " + ", ".join(ws) for attribute, ws in self.attributes.items()]
        if self.attributes:
            example = self.training_prompts[self.spec.class_names[-1]][-1]
            lines.append(f"(its captions combine them, e.g. {example!r})")
        return lines

    def embed(self, prompts: list[str]) -> TextEmbedding:
        """Text embeddings: the saved ones when every prompt is a training prompt, otherwise all
        prompts through the model's text encoder."""
        stored = self.model.prompts.stored(prompts)
        if stored is not None:
            return stored
        return self.encode(prompts)

    def encode(self, prompts: list[str]) -> TextEmbedding:
        """Text embeddings through the model's text encoder (loaded on first use)."""
        return self.model.prompts.encode(prompts)

    @functools.cached_property
    def reader(self) -> RequestReader | None:
        """How a request in other words is read, by a model whose captions name attributes:
        its class and words, said as the model's caption (None for any other model)."""
        if not self.attributes:
            return None
        bank = self.model.prompts
        return RequestReader(bank.class_names, bank.class_prompts, self.attributes,
                             self.spec.synonyms, self.encode)  # fmt: skip

    def read_requests(self, found: list[NearestPrompt]) -> list[Reading]:
        """Each request's reading (:attr:`reader`); a training caption reads as itself."""
        index = self.model.prompts.index
        new = [f for f in found if not f.trained]
        read = self.reader.read([f.prompt for f in new], [index[f.nearest][0] for f in new])
        readings = {r.prompt: r for r in read}
        names = self.model.prompts.class_names
        return [readings.get(f.prompt) or Reading(f.prompt, names[index[f.prompt][0]],
                                                  caption=f.prompt) for f in found]  # fmt: skip

    def read(self, prompts: list[str], text: TextEmbedding | None = None) -> list[NearestPrompt]:
        """Each prompt's nearest training prompt (``text``: their embeddings, if at hand)."""
        text = self.embed(prompts) if text is None else text
        return nearest_prompts(prompts, text, self.model.prompts)

    def __call__(
        self,
        prompts: list[str] | None = None,
        num_images: int = 1,
        *,
        init_images=None,
        mask=None,
        options: SamplingOptions | None = None,
        progress: bool = True,
        callback: StepCallback | None = None,
        **changes,
    ) -> Generated:
        """``num_images`` images for each prompt (default: each class's first prompt), drawn
        with ``options`` (:class:`~diffusion_lit.diffusion.options.SamplingOptions`, whose
        defaults are the sample CLI's; guidance left None is the model's own) with ``changes``
        to them by name: ``pipe(prompts, sampler="ddim", steps=50)``. The same seed and batch
        size give the same images. ``callback(done, total)`` runs after every denoising step of
        every batch (steps counted over all batches); raising in it stops the sampling.

        An edit: ``init_images`` (a picture's path, a folder, a list of paths or PIL images, or
        a tensor (M, C, H, W) in [0, 1]) are noised to ``strength`` and denoised with each
        prompt (image-to-image; ``num_images`` for each of them, in their order); with a
        ``mask`` (white: redraw, black: keep exactly), only the white part is redrawn
        (inpainting)."""
        options = (options or SamplingOptions()).replace(**changes)
        edit = self.edit_inputs(init_images, mask, options)
        prompts = self.default_prompts if prompts is None else list(prompts)
        if not prompts:
            raise UserError("The prompt list is empty: give at least one prompt.")
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise UserError(f"num_images must be an integer of at least 1, got {num_images!r}.")
        nearest = (
            self.spec.nearest_prompt if options.nearest_prompt is None else options.nearest_prompt
        )
        options = options.replace(nearest_prompt=nearest)  # the model's own, where not given
        text = self.embed(prompts)
        found = self.read(prompts, text)
        readings = [] if nearest or self.reader is None else self.read_requests(found)
        drawn = [r.caption for r in readings] or [f.drawn_as(nearest) for f in found]
        text = text if drawn == prompts else self.embed(drawn)
        guidance = options.guidance(self.spec.guidance)  # the options', else the model's own
        base = self.class_only(drawn, text, guidance)
        per_prompt = num_images * (1 if edit is None else len(edit.images))
        text = text.map(lambda z: z.repeat_interleave(per_prompt, dim=0))
        base = base and base.map(lambda z: z.repeat_interleave(per_prompt, dim=0))
        init = None
        if edit is not None:  # prompt by prompt, each init image num_images times
            init = edit.images.repeat_interleave(num_images, dim=0).repeat(len(prompts), 1, 1, 1)
        try:
            images = self.model.generate(
                text, guidance, options, progress, callback, base, init, edit and edit.mask
            )
        except NonFiniteImage as err:  # named by its prompt
            prompt = prompts[err.image // per_prompt]
            raise NonFiniteImage(err.image, err.step, err.steps, prompt) from None
        images = images.view(len(prompts), per_prompt, *images.shape[1:])
        return Generated(images, prompts, drawn, guidance, options, found, readings, edit)

    def edit_inputs(self, init_images, mask, options: SamplingOptions) -> EditInputs | None:
        """The pictures an edit starts from, at the model's size and channels; None for a
        drawing from noise (which takes no strength, mask or resampling)."""
        if init_images is None:
            given = {"mask": mask is not None, "strength": options.strength is not None,
                     "resample_jumps": options.resample_jumps > 0}  # fmt: skip
            if any(given.values()):
                name = next(k for k, v in given.items() if v)
                raise UserError(
                    f"{name} is for an edit: pass init_images (init_image=<picture or folder> "
                    f"on the command line), or leave {name} out to draw from noise."
                )
            return None
        if mask is None and options.resample_jumps:
            raise UserError("resample_jumps is for an inpainting: pass a mask, or leave it out.")
        channels, size, _ = self.model.image_shape
        return edit_inputs(init_images, mask, channels, size)

    def class_only(
        self, prompts: list[str], text: TextEmbedding, guidance: Guidance
    ) -> TextEmbedding | None:
        """For guidance with a scale of its own for the words beyond the class, each prompt's
        class alone (``text``: the prompts' embeddings): its nearest training prompt among
        those that name no attribute ("a seven" for "a thick seven"), and a prompt of its class
        alone its own embedding; None without such guidance, or when every prompt is of its
        class alone (one network pass fewer)."""
        if not (self.attributes and guidance.nested):
            return None
        plain = [p for ps in self.class_prompts.values() for p in ps]
        bases = nearest_of(text, self.model.prompts, plain)
        if bases == prompts:
            return None
        alone = torch.tensor([b == p for b, p in zip(bases, prompts, strict=True)],
                             device=text.pooled.device)  # fmt: skip
        return text.where(alone, self.model.prompts.stored(bases))

    @staticmethod
    def to_pil(images: torch.Tensor) -> list[list[Image.Image]]:
        return [[to_pil_image(image) for image in row] for row in images]

    @staticmethod
    def save(images: torch.Tensor, prompts: list[str], out_dir: str | Path) -> Path:
        """Writes ``<out_dir>/<folder>/000.png, …`` per prompt (:func:`prompt_folders`) and
        ``<out_dir>/grid.png`` (a row per prompt); returns the grid's path."""
        out_dir = Path(out_dir)
        try:
            for folder, row in zip(prompt_folders(prompts), images, strict=True):
                prompt_dir = out_dir / folder
                prompt_dir.mkdir(parents=True, exist_ok=True)
                for i, image in enumerate(row):
                    save_image(image, prompt_dir / f"{i:03d}.png")
            return save_grid(images, out_dir / "grid.png")
        except OSError as err:
            raise UserError(
                f"Cannot write images to {out_dir}: {err.strerror or err}. Pass out_dir=<a "
                "writable folder with free space>."
            ) from err
