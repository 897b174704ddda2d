"""An export's model card: how to use the model, what it is, how it was trained (from its run
directory, where it has one) and a grid of its samples."""

import shutil
from pathlib import Path

import yaml

from diffusion_lit.diffusion.guidance import Guidance
from diffusion_lit.diffusion.model import DiffusionModel
from diffusion_lit.diffusion.options import SamplingOptions
from diffusion_lit.images import save_grid
from diffusion_lit.modelfile.lineage import describe
from diffusion_lit.modelfile.spec import ModelSpec
from diffusion_lit.runs.layout import RunDir
from diffusion_lit.runs.summary import read_config, read_newest_eval, summarize


def card_grid(
    spec: ModelSpec, model: DiffusionModel, ckpt_path: Path, path: Path, steps: int,
    fresh: bool = False,
) -> str:  # fmt: skip
    """Writes the model card's picture to ``path``: the checkpoint's evaluation grid or the
    run's final sample grid when there is one (and not ``fresh``: the model is not the
    checkpoint's alone), else a fresh grid (4 per class, the sampling defaults with ``steps``
    steps); returns where it came from."""
    run = RunDir.of_checkpoint(ckpt_path) if not fresh else None
    found = [d / "grid.png" for d in RunDir.evaluation_dirs(ckpt_path)] if not fresh else []
    found += [run.final_grid] if run else []
    # only files that lie where they seem to: the run's, or beside a checkpoint of no run
    existing = [p for p in found if (run.file(p) if run else p.is_file() and not p.is_symlink())]
    if existing:
        shutil.copyfile(existing[-1], path)
        return f"copied from `{existing[-1]}`"
    options = SamplingOptions(steps=steps, seed=0)
    save_grid(model.sample_classes(4, spec.guidance, options), path)
    return f"sampled at export: {options.sampler}, {steps} steps, {spec.guidance}, seed 0"


def model_card(
    spec: ModelSpec, model: DiffusionModel, ckpt_path: Path, source: dict, grid: str
) -> str:
    """The export's README.md: how to use it, the model, its training and its samples."""
    net, encoder = spec.net["kind"], spec.text_encoder["kind"]
    channels, size, _ = model.image_shape
    params = sum(p.numel() for p in model.net.parameters())
    prompt = spec.class_prompts[0][0]
    trained = (
        f" after {source['epochs']} epochs ({source['global_step']} steps)"
        if "epochs" in source
        else ""
    )
    adapters = "".join(f", with the adapter `{a}`" for a in source.get("adapters", []))
    lines = [
        f"# diffusion_lit {net} UNet: {len(spec.class_names)} classes, {size}×{size}×{channels}",
        "",
        "A text-conditioned DDPM (noise prediction, classifier-free guidance) trained with "
        f"diffusion_lit. {params / 1e6:.2f} M parameters; "
        f"{source['weights']} weights from `{ckpt_path}`{trained}{adapters}.",
        "",
        *lineage_section(spec),
        "## Use",
        "",
        "```bash",
        f"python -m diffusion_lit.sample ckpt_path=<this folder> prompts='[\"{prompt}\"]'",
        "```",
        "",
        "```python",
        "from diffusion_lit.pipeline import TextToImage",
        "pipe = TextToImage.from_checkpoint('<this folder>')",
        f"images = pipe([{prompt!r}], num_images=4).images  # (1, 4, C, H, W) in [0, 1]",
        "```",
        "",
        "## Model",
        "",
        f"- UNet `{net}`: " + ", ".join(f"{k}={v}" for k, v in spec.net.items() if k != "kind"),
        f"- Noise schedule: {spec.schedule['kind']}, T={spec.schedule['timesteps']}",
        f"- Text encoder `{encoder}` ({spec.text_encoder.get('name_or_path') or 'bundled'})",
        f"- Sampled by default with {spec.guidance} (the sample CLI's "
        "`guidance_scale=`, `guidance_interval=` override it)",
        "- Class prompts: "
        + "; ".join(
            f"{n}: {', '.join(p)}"
            for n, p in zip(spec.class_names, spec.class_prompts, strict=True)
        ),  # fmt: skip
        "",
        *training_section(RunDir.of_checkpoint(ckpt_path), ckpt_path),
        "## Samples",
        "",
        f"A row per class prompt ({grid}):",
        "",
        "![samples](grid.png)",
        "",
    ]
    return "\n".join(lines)


def lineage_section(spec: ModelSpec) -> list[str]:
    """The models it was trained from, oldest first (none for a model trained from scratch)."""
    if not spec.lineage:
        return []
    return ["## Lineage", "", "Trained from a base model, step by step (oldest first):", "",
            *(f"{i}. {line}" for i, line in enumerate(describe(spec.lineage), 1)), ""]  # fmt: skip


def adapter_card(spec: ModelSpec, folder: Path, source: dict) -> str:
    """An adapter folder's README.md: its base, how to draw with it, what it adds."""
    base = spec.lineage[-1]
    new = [n for n in spec.class_names if n in base["classes"]]
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    example = spec.class_prompts[spec.class_names.index(new[0]) if new else 0][0]
    lines = [
        f"# diffusion_lit LoRA adapter: {', '.join(new) or 'a fine-tune'}",
        "",
        f"LoRA rank {spec.adapter['rank']} (alpha {spec.adapter['alpha']:g}) on "
        f"{len(spec.adapter['modules'])} layers of the base model's UNet, from "
        f"`{source['checkpoint']}` ({source['weights']} weights"
        + (f", {source['epochs']} epochs" if "epochs" in source else "")
        + f"); {size / 2**20:.2f} MB.",
        "",
        f"Base model: `{base['path']}`, content hash `{base['hash']}`. It is drawn over that "
        "model only; another base is refused.",
        "",
        "## Use",
        "",
        "```bash",
        f"python -m diffusion_lit.sample ckpt_path={base['path']} adapters='[<this folder>]' "
        f"prompts='[\"{example}\"]'",
        "```",
        "",
        *lineage_section(spec),
    ]
    return "\n".join(lines)


def training_section(run_dir: RunDir | None, ckpt_path: Path) -> list[str]:
    """Dataset, metrics and config of the run that wrote the checkpoint, where they are known."""
    if run_dir is None:
        return ["## Training", "", "The checkpoint is not inside a run directory.", ""]
    run, cfg = summarize(run_dir.path), read_config(run_dir.path)
    lines = ["## Training", "", f"Run `{run_dir.path}` ({run.date}): data {run.data or '?'}."]
    if run.last_accuracy is not None:
        lines.append(
            f"{run.epochs} epochs in `accuracy_log.txt`; last pseudo-accuracy "
            f"(1 − MSE(x̂₀, x₀)) {run.last_accuracy:.4f}."
        )
    if run.best_val_loss is not None:
        lines.append(f"Best val/loss (noise MSE) {run.best_val_loss:.4f}.")
    evaluation = read_newest_eval(run_dir.path, ckpt_path.stem)
    if evaluation:
        name, r = evaluation
        lines += [
            "",
            f"Evaluation (`{name}/eval.json`, {r.get('sampler')} {r.get('steps')} steps, "
            f"{Guidance.from_dict(r)}):",
            "",
            "| metric (judge classifier) | samples | real vs real |",
            "|---|---|---|",
            f"| conditional accuracy | {r['conditional_accuracy']:.1%} "
            f"| {r['classifier_accuracy']:.1%} |",
            f"| FID | {r['fid']:.3f} | {r['fid_real_vs_real']:.3f} |",
            *(
                [f"| diversity | {r['diversity']:.2f} | {r['diversity_real_vs_real']:.2f} |"]
                if "diversity" in r
                else []
            ),
            *(
                [
                    f"| diversity (judge's penultimate layer) | {r['penultimate_diversity']:.2f} "
                    f"| {r['penultimate_diversity_real_vs_real']:.2f} |"
                ]
                if "penultimate_diversity" in r
                else []
            ),  # fmt: skip
        ]
    if cfg is not None:
        lines += ["", "<details><summary>Training config</summary>", "", "```yaml"]
        text = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True).rstrip()
        lines += [text, "```", "", "</details>"]
    return [*lines, ""]
