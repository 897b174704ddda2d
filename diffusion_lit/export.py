"""Export entry point: ``python -m diffusion_lit.export ckpt_path=<ckpt> out_dir=<dir>``.

Writes a self-contained, pickle-free model folder: ``model.safetensors`` (the UNet, EMA weights
by default), ``prompts.safetensors`` (the encoded class prompts), ``config.json`` (architecture,
schedule, text encoder, image size, class prompts) and a ``README.md`` model card with the
training config, metrics and a sample grid. Sampling takes the folder as ``ckpt_path``.
"""

import logging
import shutil
import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from diffusion_lit import checks
from diffusion_lit.artifacts import is_export, module_from_checkpoint, read_checkpoint, save_export
from diffusion_lit.errors import UserError, report_user_errors
from diffusion_lit.module import DiffusionModule
from diffusion_lit.pipeline import write_class_grid
from diffusion_lit.run_dir import RunDir, read_config, read_newest_eval, summarize
from diffusion_lit.spec import guidance_text

log = logging.getLogger(__name__)


def default_out_dir(ckpt_path: Path, use_ema: bool) -> Path:
    return ckpt_path.parent / f"export-{ckpt_path.stem}{'' if use_ema else '-raw'}"


def export(cfg: DictConfig) -> Path:
    """Writes the export folder (built aside, then renamed into place); returns its path."""
    ckpt_path = checks.checkpoint_file(cfg)
    use_ema, overwrite = checks.flag(cfg, "use_ema"), checks.flag(cfg, "overwrite")
    grid_steps = checks.integer(cfg, "grid_steps", 1, 100_000)
    chosen = checks.guidance(cfg)  # None: the checkpoint's own
    out_dir = checks.out_dir(cfg, optional=True) or default_out_dir(ckpt_path, use_ema)
    if out_dir.exists() and not overwrite:
        raise UserError(f"{out_dir} already exists: pass overwrite=true or another out_dir=.")
    if out_dir.exists() and not is_export(out_dir):
        raise UserError(
            f"{out_dir} exists and is not a diffusion_lit export: overwrite=true replaces only "
            "an export folder; pass another out_dir=."
        )
    ckpt = read_checkpoint(ckpt_path)
    module = module_from_checkpoint(ckpt, use_ema, ckpt_path)
    module.hparams["sampling"] = module.sampling_options(chosen)  # what the export records
    weights = "EMA" if use_ema and "current_model_state" in ckpt else "trained (raw)"
    source = {
        "checkpoint": str(ckpt_path),
        "epochs": ckpt["epoch"] + 1,
        "global_step": ckpt["global_step"],
        "weights": weights,
    }
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as tmp:
            staged = Path(tmp) / out_dir.name
            staged.mkdir()
            save_export(module, staged, {"source": source})
            grid = sample_grid(module, ckpt_path, staged / "grid.png", grid_steps)
            (staged / "README.md").write_text(model_card(module, ckpt_path, source, grid))
            for file in staged.iterdir():
                file.chmod(0o644)  # safetensors writes owner-only files; exports are shared
            replace_dir(staged, out_dir)
    except OSError as err:
        raise UserError(
            f"Cannot write the export to {out_dir}: {err.strerror or err}. Pass out_dir=<a "
            "writable folder with free space>; nothing was changed there."
        ) from err
    log.info("Exported %s (%s weights) to %s", ckpt_path, weights, out_dir)
    return out_dir


def replace_dir(new: Path, target: Path) -> None:
    """Moves ``new`` to ``target``; an existing ``target`` is swapped out only once ``new`` is
    complete, so a failure leaves either the old folder or the new one, never half of each."""
    if target.exists():
        old = new.parent / "old"
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old)
    else:
        new.rename(target)


def sample_grid(module: DiffusionModule, ckpt_path: Path, path: Path, steps: int) -> str:
    """The model card's picture: the checkpoint's evaluation grid or the run's final sample
    grid when there is one, else a fresh grid (4 per class, ``steps`` DDPM steps)."""
    run = RunDir.of_checkpoint(ckpt_path)
    found = [
        *(d / "grid.png" for d in RunDir.evaluation_dirs(ckpt_path)),
        *([run.final_grid] if run else []),
    ]
    existing = [p for p in found if p.is_file()]
    if existing:
        shutil.copyfile(existing[-1], path)
        return f"copied from `{existing[-1]}`"
    write_class_grid(module, path, num_per_class=4, steps=steps)
    return f"sampled at export: DDPM, {steps} steps, {guidance_text(module.sampling)}, seed 0"


def model_card(module: DiffusionModule, ckpt_path: Path, source: dict, grid: str) -> str:
    hp = module.hparams
    net, encoder = hp.net["kind"], hp.text_encoder["kind"]
    size, channels = module.net.image_size, module.net.in_channels
    params = sum(p.numel() for p in module.net.parameters())
    prompt = hp.class_prompts[0][0]
    lines = [
        f"# diffusion_lit {net} UNet: {len(hp.class_names)} classes, {size}×{size}×{channels}",
        "",
        "A text-conditioned DDPM (noise prediction, classifier-free guidance) trained with "
        f"diffusion_lit. {params / 1e6:.2f} M parameters; "
        f"{source['weights']} weights from `{ckpt_path}` after {source['epochs']} epochs "
        f"({source['global_step']} steps).",
        "",
        "## Use",
        "",
        "```bash",
        f"python -m diffusion_lit.sample ckpt_path=<this folder> prompts='[\"{prompt}\"]'",
        "```",
        "",
        "```python",
        "from diffusion_lit.pipeline import TextToImage",
        "pipe = TextToImage.from_checkpoint('<this folder>')",
        f"images = pipe([{prompt!r}], num_images=4)  # (1, 4, C, H, W) in [0, 1]",
        "```",
        "",
        "## Model",
        "",
        f"- UNet `{net}`: " + ", ".join(f"{k}={v}" for k, v in hp.net.items() if k != "kind"),
        f"- Noise schedule: {hp.schedule['kind']}, T={hp.schedule['timesteps']}",
        f"- Text encoder `{encoder}` ({hp.text_encoder.get('name_or_path') or 'bundled'})",
        f"- Sampled by default with {guidance_text(module.sampling)} (the sample CLI's "
        "`guidance_scale=`, `guidance_interval=` override it)",
        "- Class prompts: "
        + "; ".join(
            f"{n}: {', '.join(p)}" for n, p in zip(hp.class_names, hp.class_prompts, strict=True)
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
            f"{guidance_text(r)}):",
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
        ]
    if cfg is not None:
        lines += ["", "<details><summary>Training config</summary>", "", "```yaml"]
        lines += [OmegaConf.to_yaml(cfg).rstrip(), "```", "", "</details>"]
    return [*lines, ""]


@hydra.main(config_path="../conf", config_name="export", version_base="1.3")
@report_user_errors
def main(cfg: DictConfig) -> None:
    print(export(cfg))


if __name__ == "__main__":
    main()
