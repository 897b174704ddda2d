"""Sampling settings against quality on one checkpoint, side by side in one run: the samplers
and step counts (images/s, conditional accuracy, FID ÷ real-vs-real, diversity, precision,
recall), then the guidance scale with one sampler, then guidance scales with the interval of
the denoising they apply in (``guidance_interval``), then the network's precision at the sample
CLI's guidance (32 vs bf16-mixed). The sample and evaluate CLIs' defaults are chosen from these
tables.

    python bench/sampling.py [ckpt_path] [--guidance-sampler ddpm:1000] [--images-per-class 50]
                             [--only samplers,guidance,interval,precision]
                             [--samplers ddpm:100,dpmpp_2m_sde:25[:linspace[:1]]] (instead
                             of the full list; a third field: the timestep spacing, a fourth:
                             the noise level η of ddim and dpmpp_2m_sde; left out or empty:
                             the sampler's defaults)
                             [--guidance-intervals 1.5@0-1,3@0.4-1] [overrides ...] [--smoke]

The checkpoint defaults to the newest quickstart run (outputs/runs/*/checkpoints/last.ckpt);
its judge classifier is trained the first time.
"""

import sys
from pathlib import Path

from common import OUT, ROOT, SMOKE, config, option, record

from diffusion_lit.diffusion.options import SamplingOptions
from diffusion_lit.evaluate import evaluate
from diffusion_lit.modelfile.load import load_model

OPTIONS = (
    "--guidance-sampler", "--images-per-class", "--only", "--guidance-intervals", "--samplers"
)  # fmt: skip
ARGS = [a for i, a in enumerate(sys.argv[1:], 1) if a != "--smoke" and a not in OPTIONS
        and sys.argv[i - 1] not in OPTIONS]  # fmt: skip
# the reference (DDPM 1000), the default before the fast samplers (DDPM 100), then each
# candidate at 10-25 steps: DPM-Solver++(2M) SDE at its defaults (the high_noise grid, η = 1.5:
# the CLIs' default sampler) and as diffusers' sde-dpmsolver++ (linspace, η = 1), DDPM,
# DPM-Solver++(2M), DDIM; (sampler, steps, spacing, η), None: the sampler's default
CANDIDATES = (("dpmpp_2m_sde", None, None), ("dpmpp_2m_sde", "linspace", 1.0),
              ("ddpm", None, None), ("dpmpp_2m", None, None), ("ddim", None, None))  # fmt: skip
SAMPLERS = [("ddpm", 1000, None, None), ("ddpm", 100, None, None)] + [
    (s, k, spacing, eta) for s, spacing, eta in CANDIDATES for k in (25, 20, 15, 10)
]
GUIDANCE = [0.0, 1.0, 1.5, 2.0, 3.0, 5.0]
INTERVALS = "1.5@0-1,2@0-1,3@0.2-1,3@0.3-1,3@0.4-1,5@0.4-1"  # guidance @ start-stop
if SMOKE:
    SAMPLERS = [
        ("ddpm", 4, None, None),
        ("ddim", 2, None, None),
        ("dpmpp_2m", 2, None, None),
        ("dpmpp_2m_sde", 3, None, None),
        ("dpmpp_2m_sde", 3, "quadratic", 1.0),
    ]
    GUIDANCE = [1.0, 3.0]
    INTERVALS = "1@0-1,3@0.4-1"
HEADER = ["| {} | img/s | accuracy | FID ÷ real | diversity | penultimate diversity "
          "| precision | recall |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip


def newest_checkpoint() -> Path:
    found = sorted((ROOT / "outputs" / "runs").glob("*/checkpoints/last.ckpt"))
    if not found:
        raise SystemExit("No checkpoint under outputs/runs/: run `make train` or pass one.")
    return found[-1]


def judge(
    ckpt: Path, sampler: str, steps: int, guidance: float, n: int, overrides, interval=(0, 1),
    spacing: str | None = None, eta: float | None = None,
) -> dict:  # fmt: skip
    judge_dir = [f"classifier.dir={OUT / 'classifiers'}"] if SMOKE else []  # else the usual cache
    resolved = SamplingOptions(sampler, timestep_spacing=spacing, eta=eta)  # defaults resolved
    grid, noise = resolved.spacing, resolved.noise_level
    name = f"{sampler}{steps}-{grid}-eta{noise}-w{guidance:g}-i{interval[0]:g}-{interval[1]:g}"
    return evaluate(config([
        f"ckpt_path={ckpt}", f"sampler={sampler}", f"steps={steps}", f"guidance_scale={guidance}",
        f"timestep_spacing={spacing or 'null'}", f"eta={'null' if eta is None else eta}",
        f"guidance_interval=[{interval[0]},{interval[1]}]", f"images_per_class={n}",
        "data.num_workers=0", "phrasing_images_per_class=0", "attribute_images_per_class=0",
        f"out_dir={OUT / 'eval' / name}",
        *judge_dir, *overrides,
    ], name="evaluate"))  # fmt: skip


def guidance_intervals(text: str) -> list[tuple[float, tuple[float, float]]]:
    """``1.5@0-1,3@0.4-1`` → [(1.5, (0.0, 1.0)), (3.0, (0.4, 1.0))]."""
    pairs = [item.split("@") for item in text.split(",")]
    return [(float(w), tuple(map(float, span.split("-")))) for w, span in pairs]


def sampler_list(text: str) -> list[tuple[str, int, str | None, float | None]]:
    """``ddpm:100,dpmpp_2m_sde:25:linspace:1`` → [("ddpm", 100, None, None), ("dpmpp_2m_sde",
    25, "linspace", 1.0)]: sampler, steps, timestep spacing and η (None: the sampler's
    default)."""
    rows = []
    for name, steps, *rest in (item.split(":") for item in text.split(",")):
        spacing, eta = (rest + ["", ""])[:2]
        rows.append((name, int(steps), spacing or None, float(eta) if eta else None))
    return rows


def label(sampler: str, steps: int, spacing: str | None, eta: float | None = None) -> str:
    """``dpmpp_2m_sde 25 high_noise η=1.5``: the grid where it is not linspace, the noise level
    where the sampler has a non-zero one (the sampler's defaults where None)."""
    resolved = SamplingOptions(sampler, timestep_spacing=spacing, eta=eta)
    spacing, eta = resolved.spacing, resolved.noise_level
    return (f"{sampler} {steps}" + ("" if spacing == "linspace" else f" {spacing}")
            + ("" if not eta else f" η={eta:g}"))  # fmt: skip


def row(first: str, r: dict) -> str:
    return (f"| {first} | {r['images_per_second']:.1f} | {r['conditional_accuracy']:.1%} "
            f"| {r['fid_ratio']:.2f} | {r['diversity']:.2f} | {r['penultimate_diversity']:.2f} "
            f"| {r['precision']:.2f} | {r['recall']:.2f} |")  # fmt: skip


def table(label: str, runs: list[tuple[str, tuple]], title: str, notes: str) -> None:
    """Judges each run, (row label, :func:`judge`'s arguments), and records the table."""
    rows = [HEADER[0].format(label), HEADER[1]]
    for first, args in runs:
        rows.append(row(first, judge(*args)))
        print(rows[-1], flush=True)
    record(title, "\n".join(rows), notes=notes)


def main() -> None:
    ckpt = Path(ARGS[0]) if ARGS and "=" not in ARGS[0] else newest_checkpoint()
    overrides = [a for a in ARGS if "=" in a]
    n = int(option("--images-per-class", "2" if SMOKE else "50"))
    [(sampler, steps, spacing, eta)] = sampler_list(
        option("--guidance-sampler", "ddpm:4" if SMOKE else "ddpm:1000")
    )
    tables = option("--only", "samplers,guidance,interval,precision").split(",")
    on = f"{label(sampler, steps, spacing, eta)} steps"
    grid = (spacing, eta)
    own = load_model(ckpt)[0].guidance  # the spec's
    samplers = sampler_list(option("--samplers", "")) if "--samplers" in sys.argv else SAMPLERS
    if "samplers" in tables:  # at the model's own guidance, as the CLIs sample it
        table(
            "sampler, steps",
            [
                (label(s, k, g, e), (ckpt, s, k, own.scale, n, overrides, own.interval, g, e))
                for s, k, g, e in samplers
            ],  # fmt: skip
            f"Samplers at the model's own {own} ({n} images per class, EMA weights)",
            f"Checkpoint: `{ckpt}`. FID in the judge's quality features ÷ real-vs-real; "
            "diversity in its texture + shape features and in its penultimate layer, each ÷ "
            "the held-out images'.",
        )
    if "guidance" in tables:
        table(
            "guidance",
            [
                (f"{w:g}", (ckpt, sampler, steps, w, n, overrides, (0, 1), *grid)) for w in GUIDANCE
            ],  # fmt: skip
            f"Guidance scale with {on} ({n} images per class)",
            f"Checkpoint: `{ckpt}`.",
        )
    if "interval" in tables:
        spans = guidance_intervals(option("--guidance-intervals", INTERVALS))
        table(
            "guidance, interval",
            [
                (
                    f"{w:g} on [{a:g}, {b:g}]",
                    (ckpt, sampler, steps, w, n, overrides, (a, b), *grid),
                )
                for w, (a, b) in spans
            ],
            f"Guidance in an interval of the denoising, {on} ({n} images per class)",
            f"Checkpoint: `{ckpt}`. Interval: the part of the way from noise (0) to image (1) "
            "where guidance applies; elsewhere the conditional prediction alone.",
        )
    if "precision" in tables:  # at the model's own guidance, as the sample CLI samples it
        w, (a, b) = own.scale, own.interval
        table(
            "precision",
            [
                (p, (ckpt, sampler, steps, w, n, [*overrides, f"precision={p}"], (a, b), *grid))
                for p in ("32", "bf16-mixed")
            ],
            f"Sampling precision, {on}, guidance {w:g} on [{a:g}, {b:g}] ({n} images per class)",
            f"Checkpoint: `{ckpt}`. bf16-mixed: the network's passes in bfloat16 autocast, the "
            "sampler's arithmetic in fp32; the same seed and starting noise.",
        )


if __name__ == "__main__":
    main()
