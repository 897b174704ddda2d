"""An evaluation's report: ``eval.json`` (every number), ``eval.md`` (the table) and
``grid.png``, in a folder named by the settings sampled with."""

import hashlib
import json
import logging
import re
from pathlib import Path

import torch

from diffusion_lit.diffusion.guidance import Guidance
from diffusion_lit.diffusion.samplers import SAMPLERS
from diffusion_lit.images import save_grid

log = logging.getLogger(__name__)


def settings_name(result: dict) -> str:
    """The evaluation folder's settings part, from what it sampled with (``result``: the
    model's guidance where the command left it null, ``auto`` precision resolved):
    ``<sampler><steps>[-<spacing>][-eta<η>]-w<scale>[-i<start>-<stop>][-a<attribute scale>]
    [-bf16][-raw][-only-<classes>]`` (the spacing and η where they are not the sampler's
    defaults)."""
    sampler, spacing = result["sampler"], result["timestep_spacing"]
    defaults = SAMPLERS[sampler]
    spacing = "" if spacing == defaults.default_spacing else f"-{spacing}"
    eta = _eta(result)
    if eta is not None and eta != defaults.default_eta:
        spacing += f"-eta{eta:g}"
    start, stop = result["guidance_interval"]
    interval = "" if (start, stop) == (0, 1) else f"-i{start:g}-{stop:g}"
    bf16 = "-bf16" if result["sampling_precision"] == "bf16-mixed" else ""
    attribute = result.get("attribute_scale")
    nested = "" if attribute in (None, result["guidance_scale"]) else f"-a{attribute:g}"
    raw = "" if result["use_ema"] else "-raw"
    names = "_".join(re.sub(r"[^\w-]+", "-", c) for c in result.get("classes") or [])
    only = f"-only-{names}" if names else ""
    if len(only) > 64:  # a long list of names: a short digest of them
        only = "-only-" + hashlib.sha256(only.encode()).hexdigest()[:12]
    return (
        f"{result['sampler']}{result['steps']}{spacing}-w{result['guidance_scale']:g}"
        f"{interval}{nested}{bf16}{raw}{only}"
    )


def write_report(result: dict, images: torch.Tensor, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(result, indent=2))
    save_grid(images[:, :8], out_dir / "grid.png")
    table = report_table(result)
    per_class = ", ".join(
        f"{name} {acc:.0%} / {result['per_class_diversity'].get(name, float('nan')):.2f}"
        for name, acc in result["per_class_accuracy"].items()
    )
    concepts = concept_table(result["concepts"]) if "concepts" in result else ""
    (out_dir / "eval.md").write_text(
        f"# Evaluation of `{result['checkpoint']}`\n\n{table}\n\nPer class (accuracy / "
        f"diversity): {per_class}\n\n{concepts}![samples, a row per class prompt](grid.png)\n"
    )
    print(table)
    if concepts:
        print(concepts)
    for name, note in result.get("notes", {}).items():
        print(f"{name}: {note}")
    log.info("Wrote %s", out_dir / "eval.json")


def phrasing_rows(r: dict) -> list[str]:
    rows = []
    for name, label in [("training", "training"), ("heldout", "held-out")]:
        if f"{name}_phrasings_accuracy" in r:
            per_prompt = r[f"{name}_phrasings_per_prompt"]
            worst = min(per_prompt, key=per_prompt.get)
            rows.append(
                f"| conditional accuracy, {label} phrasings ({len(per_prompt)} prompts) "
                f"| {r[f'{name}_phrasings_accuracy']:.1%} (worst: {worst!r} "
                f"{per_prompt[worst]:.0%}) | | |"
            )
    return rows


def attribute_rows(r: dict) -> list[str]:
    """A row per attribute: its words' AUC (trained, held-out combinations, other words)."""
    rows = []
    for name, a in r.get("attributes", {}).items():
        parts = [f"{label} {a[key]:.2f}" for key, label in
                 [("auc_trained", "trained"), ("auc_heldout", "held-out combinations"),
                  ("auc_other_words", "other words")] if key in a]  # fmt: skip
        low, high = a["words"]
        in_bin = a.get("in_bin_trained", float("nan"))
        rows.append(
            f"| {name}: AUC of '{high}' over '{low}' | {', '.join(parts)} | 1.00: always "
            f"followed, 0.50: ignored | {in_bin:.0%} in the requested share |"
        )
    for name, a in r.get("attributes_other_words", {}).items():
        low, high = a["words"]
        count = " and ".join(f"{k} for '{w}'" for w, k in a["phrasings"].items())
        rows.append(
            f"| {name} in words no training config has ({count}): AUC of '{high}' over "
            f"'{low}' | {a['auc']:.2f} | the judge names the class {a['accuracy']:.1%} | |"
        )
    return rows


def _eta(result: dict) -> float | None:
    """The η a result's sampler drew with; None for a sampler without one (an eval.json written
    before η had a default per sampler records DDIM's 0 for every sampler)."""
    return result.get("eta") if SAMPLERS[result["sampler"]].default_eta is not None else None


def report_table(r: dict) -> str:
    eta = "" if _eta(r) is None else f" (η = {_eta(r):g})"
    return "\n".join([
        f"{r['sampler']} {r['steps']} steps{eta}, {Guidance.from_dict(r)}, "
        f"{'EMA' if r['use_ema'] else 'raw'} weights, {r['images_per_class']} images per class, "
        f"seed {r['seed']}",
        "",
        "| metric (judge's features) | samples | real vs real | ratio |",
        "|---|---|---|---|",
        f"| conditional accuracy | {r['conditional_accuracy']:.1%} "
        f"| {r['classifier_accuracy']:.1%} (judge on held-out) | |",
        *phrasing_rows(r),
        *attribute_rows(r),
        f"| FID | {r['fid']:.3f} | {r['fid_real_vs_real']:.3f} | {r['fid_ratio']:.2f}× |",
        f"| KID | {r['kid_mean']:.4f} ± {r['kid_std']:.4f} "
        f"| {r['kid_mean_real_vs_real']:.4f} ± {r['kid_std_real_vs_real']:.4f} "
        f"| {r['kid_ratio']:.2f}× |",
        f"| diversity (÷ held-out's) | {r['diversity']:.2f} "
        f"| {r['diversity_real_vs_real']:.2f} | |",
        *(
            [f"| diversity in the judge's penultimate layer | {r['penultimate_diversity']:.2f} "
             f"| {r['penultimate_diversity_real_vs_real']:.2f} | |"]
            if "penultimate_diversity" in r else []
        ),
        f"| precision / recall | {r['precision']:.2f} / {r['recall']:.2f} "
        f"| {r['precision_real_vs_real']:.2f} / {r['recall_real_vs_real']:.2f} | |",
        f"| sampling speed | {r['images_per_second']:.1f} img/s | | |",
    ])  # fmt: skip


CALIBRATION = {"heldout_real": "real, held out", "unseen_style": "another artist's",
               "noise": "noise", "shuffled": "real, shuffled request",
               "training_copies": "training images + noise"}  # fmt: skip
CONCEPT_ROWS = [  # label, the requests' set, the measure
    ("subcategory accuracy", "drawn", "subcategory_accuracy"),
    ("concept R@1", "drawn", "r1"),
    ("concept R@5", "drawn", "r5"),
    ("concept R@5, the request rephrased", "rephrased", "r5"),
    ("skin-tone accuracy", "tone", "tone_accuracy"),
    ("light-vs-dark tone AUC", "tone", "tone_auc"),
    ("skin-tone accuracy, held-out pairs", "tone_heldout", "tone_accuracy"),
    ("light-vs-dark tone AUC, held-out pairs", "tone_heldout", "tone_auc"),
    ("style accuracy", "style", "style_accuracy"),
    ("style accuracy, held-out pairs", "style_heldout", "style_accuracy"),
    ("FID against the real images of the concepts", "drawn", "fid"),
    ("copies (closer to a training image than its nearest real neighbour)", "drawn", "copies"),
]


def concept_table(c: dict) -> str:
    """The concept evaluation's table: each measure of the drawn images beside the same
    measure on the calibration sets."""
    calibration = c["calibration"]
    columns = [k for k in CALIBRATION if k in calibration]

    def cell(value) -> str:
        return "—" if value is None else f"{value:.3f}" if value <= 1 else f"{value:.1f}"

    rows = [
        f"| {label} | {cell(c[source][key])} | "
        + " | ".join(cell(calibration[k].get(key)) for k in columns)
        + " |"
        for label, source, key in CONCEPT_ROWS
        if key in c.get(source, {})
    ]
    n = c["distinct_concepts"]
    return "\n".join([
        f"**Concepts**: {c['asked']} of the model's {n:,} concepts, {c['images_per_concept']} "
        f"images a request (chance: R@1 {1 / n:.4f}, R@5 {5 / n:.4f}); FID of the two styles' "
        f"real images of those concepts, real vs real: {c['fid_real_vs_real']:.1f}",
        "",
        "| measure | drawn | " + " | ".join(CALIBRATION[k] for k in columns) + " |",
        "|---|---|" + "---|" * len(columns),
        *rows,
        "", "",
    ])  # fmt: skip
