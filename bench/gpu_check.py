"""GPU check: the seed's enhanced configuration (56×56×3, batch 128, base 64, d_time 128,
T = 1000) near the hardware limit, one table per lever, measured side by side in one run:

1. training levers, each added to the row above: 32-bit, bf16-mixed, channels_last, fused Adam,
   loader workers with pinned memory, then the device-resident data instead (``data.resident``),
   torch.compile (default, then reduce-overhead: CUDA
   graphs) — img/s (the steps after a warm-up, timed as one span: the host syncs only at its
   ends, so a step's launches may overlap the previous step's kernels; validation excluded, data
   loading included), × the 32-bit row, peak memory, model FLOPs
   utilisation (``torch.utils.flop_counter`` FLOPs of a training step × img/s ÷ the GPU's dense
   bf16 peak) and val/loss after the same number of steps (the loss curve unchanged);
2. host syncs per training step, counted with ``torch.cuda.set_sync_debug_mode("warn")``, and
   where they come from;
3. sampling 1,000 images (100 per class, both CFG passes batched) with each sampler, bf16
   autocast and 32-bit;
4. this project's Lightning loop ÷ a plain PyTorch loop, and diffusers' UNet2DConditionModel, as
   in ``bench/throughput.py``.

Tables are printed as they are measured and appended to ``--out`` (default: bench/RESULTS.md).

    python bench/gpu_check.py [--smoke] [--skip-levers] [--out FILE] [Hydra overrides ...]
"""

import collections
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from common import OUT, RESULTS, SMOKE, config, machine, sync

from diffusion_lit.pipeline import TextToImage
from diffusion_lit.train import train

GPU = torch.cuda.is_available()
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 FLOP/s, datasheets
STEPS, WARMUP = (6, 2) if SMOKE else (156, 20)  # 156 = 12 epochs of the digits at batch 128
SIZE = (
    ["data.image_size=8", "data.channels=1", "data.batch_size=8", "model.base_channels=4",
     "model.time_dim=8", "schedule.timesteps=20"]
    if SMOKE else
    ["data.image_size=56", "data.channels=3", "data.batch_size=128", "model.base_channels=64",
     "model.time_dim=128"]
)  # fmt: skip
COMMON = [
    "trainer=gpu" if GPU else "trainer=cpu", "data=digits", "data.num_workers=0",
    "model=enhanced", *SIZE, "trainer.max_epochs=-1", f"trainer.max_steps={STEPS}",
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "~logger",
    "~callbacks.sample_grid", "~callbacks.curves", "~callbacks.model_checkpoint",
    "~callbacks.last_checkpoint", "~callbacks.step_checkpoint",
    "trainer.enable_checkpointing=false",
    f"trainer.check_val_every_n_epoch={STEPS // 13 or 1}",  # validated once, after STEPS steps
]  # fmt: skip
LEVERS = {  # name: overrides added to every row above
    "32-bit": ["trainer.precision=32"],
    "bf16-mixed": ["trainer.precision=bf16-mixed"],
    "+ channels_last": ["channels_last=true"],
    "+ 4 loader workers, pinned memory": [
        "data.num_workers=4", "data.pin_memory=true", "data.persistent_workers=true"
    ],
    # the dataset decoded once and kept on the device: batches gathered there (no workers)
    "+ device-resident data (instead of workers)": [
        "data.num_workers=0", "data.pin_memory=false", "data.persistent_workers=false",
        "data.resident=true",
    ],
    # Lightning refuses gradient clipping with a fused optimizer in mixed precision
    "+ fused Adam, no gradient clipping": (
        ["+optimizer.fused=true", "trainer.gradient_clip_val=null"] if GPU else []
    ),
}  # fmt: skip
COMPILE_LEVERS = {
    "+ torch.compile": ["compile=true"],
    "+ compile mode reduce-overhead (CUDA graphs)": ["compile_mode=reduce-overhead"],
}
SAMPLERS = {"dpmpp_2m": 20, "ddim": 50, "ddpm": 100}


class Report:
    """Prints each table as it is measured and appends it to the results file."""

    def __init__(self, path: Path | None):
        self.path = path
        head = f"\n## {time.strftime('%Y-%m-%d')} — GPU check: the seed's enhanced configuration"
        command = "python bench/gpu_check.py " + " ".join(sys.argv[1:])
        self.write(f"{head}\n\nMachine: {machine()}, lightning {L.__version__}.\n\n"
                   f"```\n{command}\n```\n")  # fmt: skip

    def write(self, text: str) -> None:
        print(text, flush=True)
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(text + "\n")


FLOPS: list[float] = []


def flops_per_image(module) -> float:
    """FLOPs of one training step (forward and backward) of the UNet, per image (counted once,
    on the first module: every lever trains the same UNet)."""
    if not FLOPS:
        FLOPS.append(count_flops(module))
    return FLOPS[0]


def count_flops(module) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    net, n = module.net, 4
    size, channels = net.image_size, net.in_channels
    x = torch.randn(n, channels, size, size, device=module.device)
    t = torch.randint(module.schedule.timesteps, (n,), device=module.device)
    text = module.caption_text(torch.arange(n, device=module.device) % 2)
    with FlopCounterMode(display=False) as counter:
        F.mse_loss(module.model.predict(x, t, text), x).backward()
    net.zero_grad(set_to_none=True)
    return counter.get_total_flops() / n


def peak_flops() -> float | None:
    name = torch.cuda.get_device_name() if GPU else ""
    return next((f for key, f in BF16_PEAK.items() if key in name), None)


class SpanClock(L.Callback):
    """Training img/s over the steps after ``warmup``, synced only at the span's ends and around
    validation, which is left out."""

    def __init__(self, warmup: int):
        self.warmup, self.images, self.seconds, self.t0 = warmup, 0, 0.0, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.t0 is None and trainer.global_step >= self.warmup:
            sync()
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.t0 is not None:
            self.images += len(batch[0])

    def on_validation_start(self, trainer, pl_module):
        self._stop()

    def on_train_end(self, trainer, pl_module):
        self._stop()

    def _stop(self):
        if self.t0 is not None:
            sync()
            self.seconds += time.perf_counter() - self.t0
            self.t0 = None

    def img_per_s(self) -> float:
        return self.images / self.seconds


class SyncCounter(L.Callback):
    """Counts the host syncs torch reports (``set_sync_debug_mode("warn")``) from the start of
    each training step after ``skip`` steps to the start of the next, by source line."""

    def __init__(self, skip: int):
        self.skip, self.steps, self.sites = skip, 0, collections.Counter()
        self.recording = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._collect()
        if trainer.global_step < self.skip:
            return
        self.catcher = warnings.catch_warnings(record=True)
        self.recording = self.catcher.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        self.steps += 1

    def on_train_end(self, trainer, pl_module):
        self._collect()

    def _collect(self):
        if self.recording is None:
            return
        torch.cuda.set_sync_debug_mode("default")
        self.catcher.__exit__(None, None, None)
        for w in self.recording:
            if "synchroniz" in str(w.message):
                self.sites[f"{Path(w.filename).name}:{w.lineno}"] += 1
        self.recording = None


def training_levers(report: Report, extra: list[str], levers: dict, rows=(), base=None):
    """Trains each lever added to the rows before it (``rows``: the overrides of earlier rows,
    ``base``: the 32-bit img/s); returns every row's overrides, the last eager module, the
    32-bit img/s."""
    peak, module, rows = peak_flops(), None, list(rows)
    overrides = rows[-1] if rows else []
    if base is None:
        report.write("| lever (added to the row above) | img/s | × 32-bit | peak GiB | MFU | "
                     f"val/loss after {STEPS} steps |\n|---|---|---|---|---|---|")  # fmt: skip
    for name, lever in levers.items():
        cfg = config([*COMMON, *overrides, *lever, *extra,
                      f"paths.run_dir={OUT / 'gpu_check' / str(len(rows))}"])  # fmt: skip
        if GPU:
            torch.cuda.reset_peak_memory_stats()
        clock = SpanClock(WARMUP)
        try:
            metrics, objects = train(cfg, extra_callbacks=[clock])
        except Exception as err:  # a lever that fails here is a finding, not the end of the run
            report.write(f"| {name} | failed: {type(err).__name__}: {str(err)[:200]} | | | | |")
            continue
        overrides = [*overrides, *lever]
        ips = clock.img_per_s()
        base = base or ips
        memory = torch.cuda.max_memory_allocated() / 2**30 if GPU else float("nan")
        mfu = f"{flops_per_image(objects['module']) * ips / peak:.1%}" if peak else "n/a"
        report.write(f"| {name} | {ips:.0f} | {ips / base:.2f} | {memory:.2f} | {mfu} | "
                     f"{metrics.get('val/loss', float('nan')):.4f} |")  # fmt: skip
        rows.append(overrides)
        if not cfg.compile:
            module = objects["module"]
    return rows, module, base


def sync_check(report: Report, overrides: list[str], extra: list[str]) -> None:
    run_dir = OUT / "gpu_check" / "sync"
    cfg = config([*COMMON, *overrides, *extra, "trainer.max_steps=40",
                  "trainer.enable_progress_bar=true", f"paths.run_dir={run_dir}"])  # fmt: skip
    counter = SyncCounter(skip=10)
    train(cfg, extra_callbacks=[counter])
    every = cfg.trainer.log_every_n_steps
    report.write(f"\nHost syncs over {counter.steps} training steps (progress bar on, logging "
                 f"every {every} steps), by source line:\n")  # fmt: skip
    report.write("| where | syncs |\n|---|---|")
    for site, n in counter.sites.most_common(12):
        report.write(f"| {site} | {n} |")
    if not counter.sites:
        report.write("| (none) | 0 |")


def sampling(report: Report, module) -> None:
    pipe = TextToImage(module.eval().model, module.spec)
    per_class = 2 if SMOKE else 100
    total = per_class * len(pipe.default_prompts)
    report.write(f"\nSampling {total} images ({per_class} per class, guidance 1.5, batches of "
                 "256, the conditional and unconditional passes batched):\n")  # fmt: skip
    report.write("| sampler, steps | precision | img/s | seconds |\n|---|---|---|---|")
    runs = [(s, n, "bf16 autocast") for s, n in SAMPLERS.items()]
    runs.insert(1, ("dpmpp_2m", 20, "32-bit"))
    for sampler, steps, precision in runs:
        steps = 3 if SMOKE else steps
        kw = dict(sampler=sampler, progress=False,
                  precision="32" if precision == "32-bit" else "bf16-mixed")  # fmt: skip
        pipe(num_images=2, steps=2, **kw)  # warm-up
        sync()
        t0 = time.perf_counter()
        pipe(num_images=per_class, steps=steps, **kw)
        sync()
        seconds = time.perf_counter() - t0
        speed = f"{total / seconds:.0f} | {seconds:.1f}"
        report.write(f"| {sampler}, {steps} | {precision} | {speed} |")


def plain_and_peer(report: Report, lightning_fp32: float | None, extra: list[str]) -> None:
    import throughput

    overrides = [*SIZE, "model=enhanced", *extra]
    plain, params = throughput.plain_loop_img_per_s(overrides)
    report.write("\n| 32-bit training | img/s | parameters |\n|---|---|---|")
    if lightning_fp32:
        report.write(f"| this project, Lightning (row 32-bit above) | {lightning_fp32:.0f} | |")
    report.write(f"| this project's UNet, plain loop | {plain:.0f} | {params / 1e6:.2f} M |")
    try:
        cfg = config([*throughput.COMMON, *overrides])
        net = throughput.DiffusersUNet(
            cfg.data.image_size, cfg.data.channels, cfg.model.text_dim, cfg.model.base_channels
        )
        peer, peer_params = throughput.plain_loop_img_per_s(overrides, net=net)
        report.write(f"| diffusers UNet2DConditionModel, plain loop | {peer:.0f} | "
                     f"{peer_params / 1e6:.2f} M |")  # fmt: skip
    except ImportError as err:
        report.write(f"| diffusers UNet2DConditionModel | not installed ({err}) | |")


def main() -> None:
    args = sys.argv[1:]
    out = None if SMOKE else RESULTS
    if "--out" in args:
        i = args.index("--out")
        out, args = Path(args[i + 1]), args[:i] + args[i + 2 :]
    extra = [a for a in args if a not in ("--smoke", "--skip-levers")]
    report = Report(out)
    levers = LEVERS
    if "--skip-levers" in args:  # one run of them all: the module for the tables below
        levers = {"every lever above, one run": [o for lever in LEVERS.values() for o in lever]}
    rows, module, fp32 = training_levers(report, extra, levers)
    peak = peak_flops()
    if peak:
        report.write(f"\nA training step is {FLOPS[0] / 1e9:.2f} GFLOP per image (forward and "
                     "backward, torch.utils.flop_counter); MFU is against the GPU's dense bf16 "
                     f"peak ({peak / 1e12:.0f} TFLOP/s).")  # fmt: skip
    if GPU:
        sync_check(report, rows[-1], extra)
    sampling(report, module)
    plain_and_peer(report, fp32 if levers is LEVERS else None, extra)
    if not SMOKE:  # minutes of compiling; last, so a time limit keeps the tables above
        report.write("\ntorch.compile, added to the last row of the first table:\n")
        training_levers(report, extra, COMPILE_LEVERS, rows, fp32)


if __name__ == "__main__":
    main()
