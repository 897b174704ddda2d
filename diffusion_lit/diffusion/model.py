"""A trained text-conditioned diffusion model, ready to sample."""

import torch
from torch import nn

from diffusion_lit.diffusion.guidance import Guidance
from diffusion_lit.diffusion.options import SamplingOptions
from diffusion_lit.diffusion.precision import for_sampling
from diffusion_lit.diffusion.samplers import Known, StepCallback, denoise
from diffusion_lit.diffusion.schedule import NoiseSchedule
from diffusion_lit.errors import UserError
from diffusion_lit.text.embedding import TextEmbedding
from diffusion_lit.text.prompt_bank import PromptBank


class NonFiniteImage(UserError, FloatingPointError):
    """The model drew an image that is not finite (NaN or inf): it is never returned. ``image``
    is its index in the batch drawn, ``step`` the first denoising step (of ``steps``) where the
    prediction was not finite."""

    def __init__(self, image: int, step: int, steps: int, prompt: str | None = None):
        self.image, self.step, self.steps, self.prompt = image, step, steps, prompt
        which = f"for {prompt!r}" if prompt is not None else f"(image {image} of the batch)"
        super().__init__(
            f"The model drew a non-finite image (NaN or inf) {which} from denoising step {step} "
            f"of {steps}; nothing of it was kept. Its weights overflow there: sample with "
            "precision=32, or use another checkpoint of the run."
        )


class DiffusionModel:
    """The noise-prediction network, its noise schedule and the training prompts it carries
    encoded (the guidance it samples with unless told otherwise is its spec's,
    :class:`~diffusion_lit.modelfile.spec.ModelSpec`). It holds modules, as a diffusers
    pipeline does: training wraps it (the LightningModule registers the same modules, so a
    device move, the EMA copy or a checkpoint covers them), and everything that samples — the
    Python API, the training's sample grids, model cards, the evaluation — samples through it."""

    def __init__(
        self,
        net: nn.Module,
        schedule: NoiseSchedule,
        prompts: PromptBank,
    ):
        self.net, self.schedule, self.prompts = net, schedule, prompts
        # NHWC: on GPUs with tensor cores, convolutions can skip layout transposes
        self.memory_format = torch.contiguous_format

    @property
    def device(self) -> torch.device:
        return self.prompts.pooled.device

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images it draws."""
        return self.net.in_channels, self.net.image_size, self.net.image_size

    def to(self, device: str | torch.device) -> "DiffusionModel":
        for module in (self.net, self.schedule, self.prompts):
            module.to(device)
        return self

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, text: TextEmbedding) -> torch.Tensor:
        """The network's output at (x_t, t) for the prompts ``text``: ε̂, v̂ or x̂_0
        (``schedule.prediction``)."""
        x_t = x_t.contiguous(memory_format=self.memory_format)
        # the rest of the step (metrics, samplers) works in the default layout
        return self.net(x_t, t, text.pooled, text.tokens, text.mask).contiguous()

    @torch.no_grad()
    def generate(
        self,
        text: TextEmbedding,
        guidance: Guidance,
        options: SamplingOptions | None = None,
        progress: bool = True,
        callback: StepCallback | None = None,
        base: TextEmbedding | None = None,
        init: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One image per prompt of ``text``, (N, C, H, W) in [0, 1], drawn with ``guidance``
        (resolved by the caller: ``options.guidance(spec.guidance)``; ``base``: each prompt's
        class-only prompt, for the guidance's ``attribute_scale``). Denoises ``batch_size`` images
        at a time; the starting noise comes from a CPU generator seeded with ``seed``, so a
        seed gives the same images on any device. ``init``: an image for each prompt, (N, C, H,
        W) in [0, 1], to start from, noised to the options' strength (image-to-image);
        ``mask``: (N or 1, 1, H, W), 1 where ``init`` is redrawn and 0 where it is kept exactly
        (inpainting). ``callback(done, total)`` runs after every denoising step (steps counted
        over all batches); raising in it stops the sampling."""
        options = options or SamplingOptions()
        bf16 = for_sampling(options.precision, self.device.type) == "bf16-mixed"
        generator = torch.Generator().manual_seed(options.seed)
        size = options.batch_size
        if mask is not None and len(mask) == 1:
            mask = mask.expand(len(text), -1, -1, -1)

        def chunk(batch, i: int):
            if isinstance(batch, TextEmbedding):
                return batch.map(lambda z: z[i : i + size])
            return None if batch is None else batch[i : i + size]

        chunks = [
            [chunk(batch, i) for batch in (text, base, init, mask)]
            for i in range(0, len(text), size)
        ]

        def counted(k: int) -> StepCallback | None:  # batch k's steps, counted over all batches
            if callback is None:
                return None
            return lambda done, total: callback(k * total + done, len(chunks) * total)

        was_training = self.net.training
        self.net.eval()
        images = []
        try:
            for k, batch in enumerate(chunks):
                try:
                    images.append(
                        self._denoise(
                            *batch, guidance, options, generator, bf16, progress, counted(k)
                        )
                    )
                except NonFiniteImage as err:  # its index among all images drawn
                    raise NonFiniteImage(k * size + err.image, err.step, err.steps) from None
        finally:
            self.net.train(was_training)
        images = ((torch.cat(images).float().cpu() + 1) / 2).clamp(0, 1)
        if mask is not None:  # exactly the given pixels where they are kept
            images = torch.where(mask.cpu() > 0.5, images, init.cpu())
        return images

    def _denoise(
        self, text, base, init, mask, guidance, options, generator, bf16, progress, callback
    ):
        """One batch, from the starting noise (or ``init`` noised part of the way, or kept where
        ``mask`` is 0) to images in [−1, 1]; refuses to return an image that is not finite
        (:class:`NonFiniteImage`)."""
        x = torch.randn((len(text), *self.image_shape), generator=generator)
        x = x.to(self.device, memory_format=self.memory_format)
        sampler = options.chosen_sampler
        strength = 1.0 if init is None else options.start_strength(mask is not None)
        taus = sampler.timesteps(self.schedule.timesteps, options.steps, strength)
        known = None
        if init is not None:
            init = init.to(self.device) * 2 - 1
            if strength < 1:  # SDEdit: the image noised to the grid's first timestep
                x = self.schedule.add_noise(init, x, taus[-1:].to(self.device).expand(len(x)))
            if mask is not None:
                known = Known(init, mask.to(self.device))
        text = text.map(lambda z: z.to(self.device))
        base = base.map(lambda z: z.to(self.device)) if base is not None else None
        # per image, the first step whose network output was not finite, kept on the device: the
        # sampler's steps make no host sync for it
        n, first_bad, steps = len(text), torch.full((len(text),), -1, device=self.device), 0

        def predict(x_t: torch.Tensor, t: torch.Tensor, prompts) -> torch.Tensor:
            """The network's passes (in bfloat16 autocast with bf16-mixed; the guidance and
            the sampler sum in fp32), each image's non-finite outputs noted."""
            nonlocal first_bad, steps
            with torch.autocast(self.device.type, torch.bfloat16, enabled=bf16):
                out = self.predict(x_t, t, prompts)
            bad = ~out.flatten(1).isfinite().all(1).view(-1, n).any(0)  # over the passes
            first_bad = torch.where(bad & (first_bad < 0), steps, first_bad)
            steps += 1
            return out

        x = denoise(
            sampler, guidance.predictor(predict, self.schedule, text, base), self.schedule, x,
            taus, generator, progress, callback,
            piece=lambda t: guidance.guides(t, self.schedule.timesteps), known=known,
            resample_jumps=options.resample_jumps,
        )  # fmt: skip
        first_bad = torch.where(
            ~x.flatten(1).isfinite().all(1) & (first_bad < 0), steps - 1, first_bad
        )
        if (first_bad >= 0).any():  # one host sync a batch
            image = int((first_bad >= 0).nonzero()[0])
            raise NonFiniteImage(image, int(first_bad[image]) + 1, steps)
        return x

    def sample_classes(
        self, num_per_class: int, guidance: Guidance, options: SamplingOptions | None = None
    ) -> torch.Tensor:
        """Each class's first prompt drawn ``num_per_class`` times with ``guidance``, (C, N, C,
        H, W) in [0, 1]: the pictures of training runs and model cards. At most T steps."""
        options = options or SamplingOptions()
        steps = options.steps and min(options.steps, self.schedule.timesteps)
        text = self.prompts.stored(self.prompts.default_prompts)
        text = text.map(lambda z: z.repeat_interleave(num_per_class, dim=0))
        images = self.generate(text, guidance, options.replace(steps=steps), progress=False)
        return images.view(len(self.prompts.class_prompts), num_per_class, *images.shape[1:])
