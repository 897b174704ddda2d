"""The web page: ``python -m diffusion_lit.demo [ckpt_path=<.ckpt or export>] [runs_dir=outputs]``
(the page itself is :mod:`diffusion_lit.page`)."""

from omegaconf import DictConfig

from diffusion_lit import checks, cli
from diffusion_lit.errors import UserError
from diffusion_lit.modelfile.checkpoint import existing
from diffusion_lit.training.resume import NEWEST, find_checkpoint


def demo(cfg: DictConfig, block: bool = True):
    """Builds and serves the page (``block``: until stopped); returns the Gradio app, whose
    ``local_url`` says where."""
    runs_dir = checks.path("runs_dir", cfg.runs_dir)
    ckpt_path = checks.path("ckpt_path", cfg.ckpt_path, optional=True)
    ckpt_path = existing(ckpt_path) if ckpt_path else find_checkpoint(NEWEST, runs_dir)
    out_dir = checks.out_dir("out_dir", cfg.out_dir)
    device = checks.device("device", cfg.device)
    port = checks.integer("port", cfg.port, 1, 65535, optional=True)
    host = checks.text("host", cfg.host)
    allow_any_path = checks.flag("allow_any_path", cfg.allow_any_path)
    concurrency = checks.integer("concurrency", cfg.concurrency, 1, 64)
    try:
        from diffusion_lit.page.actions import Limits
        from diffusion_lit.page.app import build_app, launch
    except ModuleNotFoundError as err:  # an optional extra: say how to get it
        if err.name != "gradio":
            raise
        raise UserError(
            f"The web page needs Gradio ({err}): pip install 'diffusion_lit[demo]' (make setup "
            "installs it)."
        ) from err
    limits = Limits(
        prompts=cfg.max_prompts, images=cfg.max_images, steps=cfg.max_steps,
        evaluations=cfg.max_evaluations, prompt_chars=cfg.max_prompt_chars,
        upload_bytes=cfg.max_upload_bytes,
    )  # fmt: skip
    app = build_app(ckpt_path, runs_dir, out_dir, device, limits, allow_any_path, concurrency)
    launch(app, host, port, out_dir, block, limits.upload_bytes)
    return app


@cli.command("demo")
def main(cfg: DictConfig) -> None:
    demo(cfg)


if __name__ == "__main__":
    main()
