"""Exponential moving averages of the weights, through Lightning's ``WeightAveraging``."""

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import AveragedModel

from diffusion_lit import checks
from diffusion_lit.text.prompt_bank import PromptBank


class WarmupEMAModel(AveragedModel):
    """An exponential moving average of a model's weights whose decay warms up: after n updates
    it is min(decay, (1 + n)/(10 + n)); the first update copies the weights.

    Hand-written over torch's ``AveragedModel`` (which keeps the copy and its ``n_averaged``)
    because its ``update_parameters`` reads ``n_averaged`` on the host twice per step and updates
    one tensor at a time: on a GPU that is a device sync and hundreds of kernel launches every
    step. Here the update is one ``torch._foreach_lerp_`` (a third of the time of a sub, a mul
    and an add) and the decay stays a tensor."""

    def __init__(self, model: torch.nn.Module, decay: float, **kwargs):
        super().__init__(model, **kwargs)
        self.decay = decay
        self._pairs: tuple | None = None  # (model, averaged, current, others): see _paired
        # the prompt bank is fixed while training: the copy shares the model's, instead of
        # holding (and averaging, every step) a second copy of every caption's encoding
        for name, module in model.named_modules():
            if isinstance(module, PromptBank):
                parent, _, attr = name.rpartition(".")
                setattr(self.module.get_submodule(parent), attr, module)

    def _tensors(self, model: torch.nn.Module) -> list[torch.Tensor]:
        if not self.use_buffers:
            return list(model.parameters())
        buffers = [b for m in model.modules() if not isinstance(m, PromptBank)
                   for b in m.buffers(recurse=False)]  # fmt: skip
        return [*model.parameters(), *buffers]

    def _paired(self, model: torch.nn.Module) -> tuple[list, list, list]:
        """The averaged and the model's floating-point tensors, and the other pairs: gathered
        once for a model (its tensors are updated in place while it trains; walking its modules
        every step cost more than the update itself)."""
        if self._pairs is None or self._pairs[0] is not model:
            pairs = list(zip(self._tensors(self.module), self._tensors(model), strict=True))
            floats = [(a, c.detach()) for a, c in pairs if a.is_floating_point()]
            averaged, current = (list(z) for z in zip(*floats, strict=True)) if floats else ([], [])
            others = [(a, c.detach()) for a, c in pairs if not a.is_floating_point()]
            self._pairs = (model, averaged, current, others)
        return self._pairs[1:]

    @torch.no_grad()
    def update_parameters(self, model: torch.nn.Module) -> None:
        averaged, current, others = self._paired(model)
        n = self.n_averaged
        weight = 1 - ((1 + n) / (10 + n)).clamp(max=self.decay)
        weight = torch.where(n == 0, torch.ones_like(weight), weight)  # the first: a copy
        if averaged:
            device = averaged[0].device
            if current[0].device != device:  # an average kept on another device
                current = [c.to(device) for c in current]
            # averaged += weight · (current − averaged), one kernel
            torch._foreach_lerp_(averaged, current, weight.to(device, averaged[0].dtype))
        for a, c in others:  # counters and flags: the model's own
            a.copy_(c)
        self.n_averaged += 1


class WarmupEMA(WeightAveraging):
    """An exponential moving average of the weights, updated every step, with a warmed-up decay
    (:class:`WarmupEMAModel`). Lightning's ``WeightAveraging`` does the swapping for validation,
    checkpointing and DDP; its ``EMAWeightAveraging`` keeps the decay fixed, and then for the
    first ~1/(1 − decay) steps the average is dominated by the random initial weights, which
    ruins the samples of short runs.
    """

    def __init__(self, decay: float = 0.999, **kwargs):
        super().__init__(**kwargs)
        self.decay = checks.real("decay", decay, 0, 1)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # as WeightAveraging.setup, with the warm-up model: the base class keeps its settings and
        # its copy in these attributes and has no hook to choose the averaged model's class
        if stage == "fit":
            self._average_model = WarmupEMAModel(
                pl_module, self.decay, device=self._device or pl_module.device,
                use_buffers=self._use_buffers,
            )  # fmt: skip

    def averaged(self, pl_module: L.LightningModule) -> L.LightningModule:
        """The module with the averaged weights (``pl_module`` itself before the average exists)."""
        # WeightAveraging keeps its copy in _average_model, which setup() above creates; it has
        # no public accessor for it
        return self._average_model.module if self._average_model is not None else pl_module


def averaged_module(trainer: L.Trainer, pl_module: L.LightningModule) -> L.LightningModule:
    """The module with the EMA weights when a :class:`WarmupEMA` keeps them, else ``pl_module``."""
    found = [c.averaged(pl_module) for c in trainer.callbacks if isinstance(c, WarmupEMA)]
    return found[0] if found else pl_module
