"""Sampling settings against quality on one checkpoint, side by side in one run: the samplers
and step counts (images/s, conditional accuracy, FID ÷ real-vs-real, diversity, precision,
recall), then the guidance scale with one sampler. The sample and evaluate CLIs' defaults are
chosen from these tables.

    python bench/sampling.py [ckpt_path] [--guidance-sampler ddpm:1000] [overrides ...] [--smoke]

The checkpoint defaults to the newest quickstart run (outputs/runs/*/checkpoints/last.ckpt);
its judge classifier is trained the first time.
"""

import sys
from pathlib import Path

from common import OUT, ROOT, SMOKE, config, record

from diffusion_lit.evaluate import evaluate

OPTIONS = ("--guidance-sampler", "--images-per-class")
ARGS = [a for i, a in enumerate(sys.argv[1:], 1) if a != "--smoke" and a not in OPTIONS
        and sys.argv[i - 1] not in OPTIONS]  # fmt: skip
SAMPLERS = [("ddpm", 1000), ("ddpm", 250), ("ddpm", 100), ("ddim", 50), ("ddim", 20),
            ("dpmpp_2m", 20), ("dpmpp_2m", 10)]  # fmt: skip
GUIDANCE = [0.0, 1.0, 1.5, 2.0, 3.0, 5.0]
if SMOKE:
    SAMPLERS, GUIDANCE = [("ddpm", 4), ("ddim", 2), ("dpmpp_2m", 2)], [1.0, 3.0]
HEADER = ["| {} | img/s | accuracy | FID ÷ real | diversity | precision | recall |",
          "|---|---|---|---|---|---|---|"]  # fmt: skip


def option(name: str, default: str) -> str:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def newest_checkpoint() -> Path:
    found = sorted((ROOT / "outputs" / "runs").glob("*/checkpoints/last.ckpt"))
    if not found:
        raise SystemExit("No checkpoint under outputs/runs/: run `make train` or pass one.")
    return found[-1]


def judge(ckpt: Path, sampler: str, steps: int, guidance: float, n: int, overrides) -> dict:
    judge_dir = [f"classifier.dir={OUT / 'classifiers'}"] if SMOKE else []  # else the usual cache
    return evaluate(config([
        f"ckpt_path={ckpt}", f"sampler={sampler}", f"steps={steps}", f"guidance_scale={guidance}",
        f"images_per_class={n}", "data.num_workers=0",
        f"out_dir={OUT / 'eval' / f'{sampler}{steps}-w{guidance:g}'}", *judge_dir, *overrides,
    ], name="evaluate"))  # fmt: skip


def row(first: str, r: dict) -> str:
    return (f"| {first} | {r['images_per_second']:.1f} | {r['conditional_accuracy']:.1%} "
            f"| {r['fid_ratio']:.2f} | {r['diversity']:.2f} | {r['precision']:.2f} "
            f"| {r['recall']:.2f} |")  # fmt: skip


def main() -> None:
    ckpt = Path(ARGS[0]) if ARGS and "=" not in ARGS[0] else newest_checkpoint()
    overrides = [a for a in ARGS if "=" in a]
    n = int(option("--images-per-class", "2" if SMOKE else "50"))
    guidance_sampler, guidance_steps = option("--guidance-sampler", "ddpm:4" if SMOKE
                                              else "ddpm:1000").split(":")  # fmt: skip
    rows = [HEADER[0].format("sampler, steps"), HEADER[1]]
    for sampler, steps in SAMPLERS:
        rows.append(row(f"{sampler} {steps}", judge(ckpt, sampler, steps, 3.0, n, overrides)))
        print(rows[-1], flush=True)
    record(
        f"Samplers at guidance 3 ({n} images per class, EMA weights)",
        "\n".join(rows),
        notes=f"Checkpoint: `{ckpt}`. FID in the judge's quality features ÷ real-vs-real.",
    )
    rows = [HEADER[0].format("guidance"), HEADER[1]]
    for w in GUIDANCE:
        r = judge(ckpt, guidance_sampler, int(guidance_steps), w, n, overrides)
        rows.append(row(f"{w:g}", r))
        print(rows[-1], flush=True)
    record(f"Guidance scale with {guidance_sampler} {guidance_steps} steps ({n} images per class)",
           "\n".join(rows), notes=f"Checkpoint: `{ckpt}`.")  # fmt: skip


if __name__ == "__main__":
    main()
