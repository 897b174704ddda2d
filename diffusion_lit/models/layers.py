"""Building blocks shared by the UNets: time embeddings, text conditioning and its dropout,
attention."""

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from diffusion_lit import checks
from diffusion_lit.errors import BadValue, UserError


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups that divides ``channels`` (so 1- and 3-channel inputs work)."""
    return nn.GroupNorm(math.gcd(channels, 8), channels)


def shortcut(in_channels: int, out_channels: int) -> nn.Module:
    """A residual block's skip path: a 1×1 conv when the width changes, else the identity."""
    if in_channels == out_channels:
        return nn.Identity()
    return nn.Conv2d(in_channels, out_channels, 1)


class LearnedTimeEmbedding(nn.Module):
    """The seed's simple-UNet time embedding: e_t = W2 · SiLU(W1 · Emb(t)), Emb learned per step."""

    def __init__(self, timesteps: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(timesteps, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.embed(t))  # (B, dim)


class SinusoidalTimeEmbedding(nn.Module):
    """The enhanced UNet's time embedding: [sin(t·f_i), cos(t·f_i)] pairs with f_i = 10000^(−2i/d)
    (the Transformer's positional encoding), then the same MLP as the learned one."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:  # sin/cos pairs
            raise BadValue("time_dim", dim, "an even integer")
        freqs = 10000 ** (-torch.arange(dim // 2, dtype=torch.float64) * 2 / dim)
        self.register_buffer("freqs", freqs.float(), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.float()[:, None] * self.freqs  # (B, d/2)
        emb = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # sin, cos interleaved
        return self.mlp(emb)  # (B, dim)


class ConditionalDropout(nn.Module):
    """Drops a sample's whole text conditioning (→ the null embedding) with probability p.

    Active in training only, so the network also learns the unconditional noise prediction that
    classifier-free guidance needs; identity in eval mode or when p = 0. ``forward`` returns the
    per-sample keep mask (B,) so a network can drop its pooled vector and its tokens together.
    """

    def __init__(self, p: float):
        super().__init__()
        if not (checks.finite(p) and 0 <= p < 1):  # at 1 no prompt would ever be seen
            raise BadValue("cond_drop_prob", p, "a finite number ≥ 0 and < 1")
        self.p = float(p)

    def forward(self, batch_size: int, device: torch.device) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return torch.ones(batch_size, dtype=torch.bool, device=device)
        return torch.rand(batch_size, device=device) >= self.p


@contextmanager
def kept_prompts(net: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, the keep mask (B,) of every forward of ``net``'s
    :class:`ConditionalDropout` is appended to the list yielded: which prompts the network saw
    and which it dropped to the null prompt (for a teacher that must answer the same)."""
    masks: list[torch.Tensor] = []
    drops = [m for m in net.modules() if isinstance(m, ConditionalDropout)]
    hooks = [m.register_forward_hook(lambda _m, _in, keep: masks.append(keep)) for m in drops]
    try:
        yield masks
    finally:
        for hook in hooks:
            hook.remove()


class TextConditioning(nn.Module):
    """Adds the prompt's projected pooled embedding to the time embedding, e_cond = e_t + W·e_text,
    after conditional dropout. Returns e_cond and the prompt's tokens and mask, a dropped or
    missing prompt being the null prompt: a zero pooled vector and every token masked."""

    def __init__(self, text_dim: int, time_dim: int, drop_prob: float):
        super().__init__()
        self.text_dim = text_dim
        self.proj = nn.Linear(text_dim, time_dim)
        self.dropout = ConditionalDropout(drop_prob)

    def forward(
        self,
        time_emb: torch.Tensor,
        pooled: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, device = time_emb.shape[0], time_emb.device
        if pooled is None:
            pooled = time_emb.new_zeros(b, self.text_dim)
        if tokens is None:
            tokens = time_emb.new_zeros(b, 1, self.text_dim)
            mask = torch.zeros(b, 1, dtype=torch.bool, device=device)
        keep = self.dropout(b, device)  # a dropped prompt loses its vector and its tokens
        cond = time_emb + self.proj(pooled * keep[:, None].to(pooled.dtype))
        return cond, tokens, mask & keep[:, None]


class Attention(nn.Module):
    """Multi-head attention of image positions over a context, softmax(QKᵀ/√d)·V through
    ``scaled_dot_product_attention``, added back to the input (pre-norm residual).

    Self-attention when ``context_dim`` is None (queries, keys and values from the image);
    cross-attention otherwise, over text tokens (B, L, context_dim) with a padding mask. A learned
    null token is always among the keys, so a prompt dropped to "no text" (all tokens masked)
    still has something to attend to.
    """

    def __init__(self, channels: int, heads: int = 4, context_dim: int | None = None):
        super().__init__()
        checks.integer("attention_heads", heads, 1, channels)
        if channels % heads:
            raise BadValue("attention_heads", heads, f"a divisor of the width {channels}")
        self.heads, self.cross = heads, context_dim is not None
        self.norm = group_norm(channels)
        self.to_q = nn.Linear(channels, channels)
        kv_dim = context_dim if self.cross else channels
        self.to_kv = nn.Linear(kv_dim, 2 * channels)
        self.proj = nn.Linear(channels, channels)
        if self.cross:
            self.null_token = nn.Parameter(torch.zeros(1, 1, context_dim))

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, c, h, w = x.shape
        q_in = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        attn_mask = None
        if self.cross:
            context = torch.cat([self.null_token.expand(b, -1, -1).to(context), context], dim=1)
            keep = torch.ones(b, 1, dtype=torch.bool, device=x.device)
            attn_mask = torch.cat([keep, mask], dim=1)[:, None, None, :]  # (B, 1, 1, 1 + L)
        else:
            context = q_in
        q = self.to_q(q_in)
        k, v = self.to_kv(context).chunk(2, dim=-1)
        q, k, v = (
            z.unflatten(-1, (self.heads, -1)).transpose(1, 2) for z in (q, k, v)
        )  # (B, nh, N, hs)
        with sdpa_kernel(SDPBackend.MATH) if _slow_to_train(q) else nullcontext():
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.proj(out.transpose(1, 2).flatten(2))  # (B, HW, C)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


def _slow_to_train(q: torch.Tensor) -> bool:
    """PyTorch's fused (flash) attention on a CPU is slow to train in bfloat16: its backward
    took 3-10x the plain (math) kernel's at these models' head sizes and text lengths (63 vs
    13 ms for 64 images of 256 positions over 17 tokens), making a bf16-mixed step of the
    enhanced UNet slower than a 32-bit one; its forward is as fast, and in 32-bit it wins
    (bench/RESULTS.md)."""
    return q.device.type == "cpu" and q.dtype == torch.bfloat16 and torch.is_grad_enabled()


def check_unet(
    image_size: int, in_channels: int, text_dim: int, base_channels: int, time_dim: int
) -> None:
    """The arguments every UNet takes, checked before anything is built: an image size its two
    halvings round-trip, and sizes far above any sensible setting refused."""
    checks.integer("image_size", image_size, 4, 4096)
    check_image_size(image_size, 4)
    checks.integer("in_channels", in_channels, 1, 64)
    checks.integer("text_dim", text_dim, 1, 16384)
    checks.integer("base_channels", base_channels, 1, 1024)
    checks.integer("time_dim", time_dim, 2, 4096)


def check_image_size(image_size: int, factor: int) -> None:
    """Fail early with a fix when the UNet's down/up path cannot round-trip ``image_size``."""
    if image_size <= 0 or image_size % factor:
        raise UserError(
            f"image_size={image_size} is not divisible by {factor}: the UNet halves the image "
            f"{int(math.log2(factor))} times. Set data.image_size to a multiple of {factor} "
            f"(e.g. {max(factor, round(image_size / factor) * factor)})."
        )
