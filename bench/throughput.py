"""Training throughput, measured side by side in one run:

1. this project's Lightning training vs a plain PyTorch loop of the same model, data and batch
   (the framework overhead), for both UNets at the quickstart, Fashion-MNIST, emoji (RGB at
   32 px) and seed-MNIST (RGB at 56 px) sizes, eager vs bf16-mixed vs channels_last vs
   torch.compile;
2. the peer: diffusers' UNet2DConditionModel at a size comparable to the enhanced UNet, in the
   same plain loop, with parameter counts.

img/s is the median over training steps after warm-up (each step timed from its batch to the
optimizer update; data loading excluded). The two loops take their steps in turn in one process
(a plain step after each Lightning step), so that both see the same machine: on a shared CPU
whose speed drifts, two runs of one loop a minute apart differed by up to ±10 %.

    python bench/throughput.py [--size NAME] [--steps N] [--no-compile] [--smoke]
    # --size: the sizes whose name starts so; --steps: training steps per measurement (12);
    # --no-compile: without the torch.compile rows (inductor's CPU code does not follow an ISA
    # emulated with ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA: it aborted there)
"""

import itertools
import sys
from collections.abc import Callable, Iterator

import lightning as L
import torch
import torch.nn.functional as F
from common import OUT, SMOKE, LightningStepClock, StepClock, config, record

from diffusion_lit.diffusion.schedule import NoiseSchedule
from diffusion_lit.text.prompt_bank import PromptBank
from diffusion_lit.train import train
from diffusion_lit.training.config import build

CPU = not torch.cuda.is_available()
SIZES = {  # name: data/model overrides (the seed-MNIST batch is cut on CPU to keep it minutes)
    "quickstart 16px×1": ["data.image_size=16", "data.channels=1", "data.batch_size=64",
                          "model.base_channels=32", "model.time_dim=64"],
    "Fashion-MNIST 28px×1": ["data.image_size=28", "data.channels=1", "data.batch_size=128",
                             "model.base_channels=48", "model.time_dim=128"],
    "emoji 32px×3": ["data.image_size=32", "data.channels=3", "data.batch_size=64",
                     "model.base_channels=64", "model.time_dim=128"],
    "seed-MNIST 56px×3": ["data.image_size=56", "data.channels=3",
                          f"data.batch_size={16 if CPU else 128}",
                          "model.base_channels=64", "model.time_dim=128"],
}  # fmt: skip
if "--size" in sys.argv:
    SIZES = {k: v for k, v in SIZES.items() if k.startswith(sys.argv[sys.argv.index("--size") + 1])}
if SMOKE:
    SIZES = {"smoke 8px×1": ["data.image_size=8", "data.channels=1", "data.batch_size=8",
                             "model.base_channels=4", "model.time_dim=8"]}  # fmt: skip
STEPS, WARMUP = (4, 1) if SMOKE else (12, 3)
if "--steps" in sys.argv:  # more steps, a steadier median (a ratio of 0.9 moves by ±0.03 at 12)
    STEPS = int(sys.argv[sys.argv.index("--steps") + 1])
COMMON = ["data=digits", "data.num_workers=0", "trainer=cpu" if CPU else "trainer=gpu",
          "trainer.precision=32", "~logger", "~callbacks.sample_grid", "~callbacks.curves",
          "~callbacks.model_checkpoint", "~callbacks.last_checkpoint", "~callbacks.step_checkpoint",
          "trainer.max_epochs=-1", f"trainer.max_steps={STEPS}", "trainer.limit_val_batches=0",
          "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]  # fmt: skip


def lightning_and_plain_img_per_s(overrides: list[str], run_dir) -> tuple[float, float]:
    """This project's Lightning training and the plain loop (:func:`plain_loop`) of the same
    model and data, interleaved: a plain step after every Lightning step, outside its clock."""
    cfg = config([*COMMON, *overrides, f"paths.run_dir={run_dir}"])
    lightning, plain = StepClock(WARMUP), StepClock(WARMUP)
    batches, step, _ = plain_loop(overrides)

    class PlainStepBeside(L.Callback):  # after LightningStepClock's on_train_batch_end
        def on_train_batch_end(self, *args):
            batch = next(batches)
            plain.start()
            plain.stop(step(batch))

    train(cfg, extra_callbacks=[LightningStepClock(lightning), PlainStepBeside()])
    return lightning.img_per_s(), plain.img_per_s()


def plain_loop_img_per_s(overrides: list[str], net=None) -> tuple[float, int]:
    """The plain loop's img/s alone, and its parameter count."""
    batches, step, parameters = plain_loop(overrides, net)
    clock = StepClock(WARMUP)
    for batch in itertools.islice(batches, STEPS):
        clock.start()
        clock.stop(step(batch))
    return clock.img_per_s(), parameters


def plain_loop(overrides: list[str], net=None) -> tuple[Iterator, Callable[[tuple], int], int]:
    """The same diffusion step as a hand-written loop: no trainer, no metrics, no EMA; the
    recipe's gradient clipping, which changes what is learnt, included. Returns the training
    batches (endless, on the device), the step (a batch → its number of images) and the
    network's parameter count."""
    cfg = config([*COMMON, *overrides])
    datamodule = build(cfg.data)
    datamodule.setup("fit")
    # the same text as training: a caption of each image, drawn at random among its own
    bank = PromptBank(datamodule.class_names, datamodule.class_prompts)
    bank.fill(build(cfg.text_encoder))
    device = torch.device("cpu" if CPU else "cuda")
    bank.to(device)
    net = (net or build(cfg.model)).to(device)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    bf16 = cfg.trainer.precision == "bf16-mixed"  # as Lightning's: autocast around the forward
    net.to(memory_format=fmt)
    if cfg.compile:
        net.compile()
    schedule = NoiseSchedule(**cfg.schedule).to(device)
    optimizer = build(cfg.optimizer)(params=net.parameters())
    loader = itertools.chain.from_iterable(itertools.repeat(datamodule.train_dataloader()))
    batches = (tuple(z.to(device) for z in batch) for batch in loader)
    clip = cfg.trainer.gradient_clip_val

    def step(batch: tuple) -> int:
        x0, labels, *rows = batch
        width = rows[0].shape[1] if rows else bank.where.shape[1]  # rows: (B, K) its captions
        drawn = torch.randint(width, (len(x0),), device=device)
        text = bank.lookup(labels, rows[0].gather(1, drawn[:, None])[:, 0] if rows else drawn)
        t = torch.randint(schedule.timesteps, (len(x0),), device=device)
        noise = torch.randn_like(x0)
        x_t = schedule.add_noise(x0, noise, t).contiguous(memory_format=fmt)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            pred = net(x_t, t, text.pooled, text.tokens, text.mask)
        pred = pred.sample if hasattr(pred, "sample") else pred  # diffusers' output object
        loss = F.mse_loss(pred.float(), noise)
        optimizer.zero_grad()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        optimizer.step()
        return len(x0)

    return batches, step, sum(p.numel() for p in net.parameters())


class DiffusersUNet(torch.nn.Module):
    """diffusers' UNet2DConditionModel behind this project's (x, t, pooled, tokens, mask) call."""

    def __init__(self, image_size, in_channels, text_dim, base_channels):
        super().__init__()
        from diffusers import UNet2DConditionModel

        c = base_channels
        self.unet = UNet2DConditionModel(
            sample_size=image_size, in_channels=in_channels, out_channels=in_channels,
            layers_per_block=1, block_out_channels=(c, 2 * c), norm_num_groups=min(8, c),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=text_dim, attention_head_dim=max(1, c // 4),
        )  # fmt: skip

    def forward(self, x, t, pooled, tokens, mask):
        return self.unet(x, t, encoder_hidden_states=tokens, encoder_attention_mask=mask).sample


def main() -> None:
    rows = ["| size | model | variant | Lightning img/s | plain loop img/s | Lightning / plain |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    variants = {"eager": [], "bf16-mixed": ["trainer.precision=bf16-mixed"],
                "channels_last": ["channels_last=true"]}  # fmt: skip
    if not SMOKE and "--no-compile" not in sys.argv:
        variants["torch.compile"] = ["compile=true"]
    for size, size_overrides in SIZES.items():
        for model in ["simple", "enhanced"]:
            for variant, extra in variants.items():
                if variant == "torch.compile" and not size.startswith("quickstart"):
                    continue  # minutes of compiling per model on a CPU: the small size shows it
                overrides = [f"model={model}", *size_overrides, *extra]
                lit, plain = lightning_and_plain_img_per_s(overrides, OUT / model)
                rows.append(f"| {size} | {model} | {variant} | {lit:.0f} | {plain:.0f} "
                            f"| {lit / plain:.2f} |")  # fmt: skip
    record("Training throughput: Lightning vs a plain PyTorch loop", "\n".join(rows),
           notes="The two loops take their steps in turn in one process (the tables above this "
           "one's: one loop's run after the other's).")  # fmt: skip

    peer = [
        "| size | model | parameters | plain loop img/s | × enhanced |",
        "|---|---|---|---|---|",
    ]
    for size, size_overrides in SIZES.items():
        cfg = config([*COMMON, "model=enhanced", *size_overrides])
        ours, ours_params = plain_loop_img_per_s(["model=enhanced", *size_overrides])
        theirs_net = DiffusersUNet(cfg.data.image_size, cfg.data.channels, cfg.text_encoder.dim,
                                   cfg.model.base_channels)  # fmt: skip
        theirs, theirs_params = plain_loop_img_per_s(
            ["model=enhanced", *size_overrides], theirs_net
        )
        peer.append(
            f"| {size} | enhanced (this project) | {ours_params / 1e6:.2f} M | {ours:.0f} | 1.00 |"
        )
        peer.append(f"| {size} | diffusers UNet2DConditionModel | {theirs_params / 1e6:.2f} M "
                    f"| {theirs:.0f} | {theirs / ours:.2f} |")  # fmt: skip
    record("Peer: diffusers' UNet2DConditionModel vs the enhanced UNet", "\n".join(peer),
           notes="diffusers: two CrossAttnDownBlock2D/UpBlock2D levels, widths (c, 2c), one "
           "layer per block, cross-attention to the same MiniLM tokens.")  # fmt: skip


if __name__ == "__main__":
    main()
