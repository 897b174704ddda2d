"""The samplers' speed/quality trade-off on one checkpoint: images/s, conditional accuracy and
judge-FID for DDPM 1000 steps vs DDIM 50/20 vs DPM-Solver++ 20/10, side by side in one run.

    python bench/sampling.py [ckpt_path] [data overrides ...] [--smoke]

The checkpoint defaults to the newest quickstart run (outputs/runs/*/checkpoints/last.ckpt); its
judge classifier is trained first if none is cached.
"""

import sys
from pathlib import Path

from common import OUT, ROOT, SMOKE, record
from hydra import compose, initialize_config_dir

from diffusion_lit.evaluate import evaluate

ARGS = [a for a in sys.argv[1:] if a != "--smoke"]
CASES = [("ddpm", 1000), ("ddim", 50), ("ddim", 20), ("dpmpp_2m", 20), ("dpmpp_2m", 10)]
if SMOKE:
    CASES = [("ddpm", 4), ("ddim", 2), ("dpmpp_2m", 2)]


def newest_checkpoint() -> Path:
    found = sorted((ROOT / "outputs" / "runs").glob("*/checkpoints/last.ckpt"))
    if not found:
        raise SystemExit("No checkpoint under outputs/runs/: run `make train` or pass one.")
    return found[-1]


def main() -> None:
    ckpt = Path(ARGS[0]) if ARGS and "=" not in ARGS[0] else newest_checkpoint()
    overrides = [a for a in ARGS if "=" in a]
    n = 2 if SMOKE else 20
    rows = ["| sampler | steps | img/s | × first row's speed | conditional accuracy "
            "| FID ÷ real | diversity |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    base = None
    judge_dir = [f"classifier.dir={OUT / 'classifiers'}"] if SMOKE else []  # else the usual cache
    for sampler, steps in CASES:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("evaluate", overrides=[
                f"ckpt_path={ckpt}", f"sampler={sampler}", f"steps={steps}",
                f"images_per_class={n}", "data.num_workers=0",
                f"out_dir={OUT / 'eval' / sampler}{steps}", *judge_dir, *overrides,
            ])  # fmt: skip
        r = evaluate(cfg)  # trains the judge the first time
        base = base or r["images_per_second"]
        rows.append(f"| {sampler} | {steps} | {r['images_per_second']:.1f} "
                    f"| {r['images_per_second'] / base:.1f} | {r['conditional_accuracy']:.1%} "
                    f"| {r['fid_ratio']:.2f} | {r['diversity']:.2f} |")  # fmt: skip
    record(f"Sampling speed vs quality ({n} images per class, guidance 3, EMA weights)",
           "\n".join(rows), notes=f"Checkpoint: `{ckpt}`; FID in the judge's quality "
           "features ÷ real-vs-real.")  # fmt: skip


if __name__ == "__main__":
    main()
