"""The web page behind ``python -m diffusion_lit.demo``: a thin Gradio page over the Python API.

- **Generate**: prompts (one a line) → images, with a progress bar fed by the sampler's own steps,
  the time taken, the grid PNG to download and the notes on prompts the model never trained on.
  The images are the sample CLI's for the same settings (they are written by the same code, to
  ``<out_dir>/<date_time>/``). *Edit a picture*: an uploaded picture (and a mask) redrawn
  with each prompt, bounded and deleted before the job samples.
- **Runs**: the ``runs list`` table of a folder of runs; a run's curves, sample grids, accuracy
  log, evaluations and config; ``runs compare``; export a checkpoint, or load it to generate.

Offline and private: analytics off, no share link, bound to 127.0.0.1, system fonts only.
"""

import os
import random
from pathlib import Path

import gradio as gr

from diffusion_lit import checks, cli
from diffusion_lit.diffusion.options import STRENGTH
from diffusion_lit.diffusion.samplers import SAMPLERS
from diffusion_lit.page.actions import (
    Limits,
    Models,
    Page,
    guidance_slider,
    steps_box,
    vocabulary,
)
from diffusion_lit.pipeline import IMAGES_PER_PROMPT

# no web fonts: Gradio's default theme would fetch IBM Plex from Google
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"],
    font_mono=["ui-monospace", "Consolas", "monospace"],
)


def build_app(
    ckpt_path: str | Path,
    runs_dir: str | Path = "outputs",
    out_dir: str | Path = "outputs/demo",
    device: str = "auto",
    limits: Limits | None = None,
    allow_any_path: bool = False,
    concurrency: int = 1,
) -> gr.Blocks:
    """The page (not yet launched); ``ckpt_path`` is what the Generate tab starts with, the
    sample CLI's options are its defaults, ``limits`` bound each request, and ``concurrency``
    requests sample at once (the others wait their turn)."""
    defaults = cli.compose("sample")
    # Gradio copies every file it serves into its cache, named only by this variable (read as
    # each component is made): the page's own folder, not the system's temporary one
    os.environ["GRADIO_TEMP_DIR"] = str((Path(out_dir) / ".gradio").resolve())
    limits = limits or Limits()
    models = Models(device, Path(runs_dir), Path(ckpt_path), allow_any_path)
    page = Page(models, Path(runs_dir), Path(out_dir), limits, defaults)
    first = page.models.get(str(ckpt_path), defaults.use_ema)  # a bad checkpoint stops the start
    with gr.Blocks(title="diffusion_lit", analytics_enabled=False) as app:
        gr.Markdown("# diffusion_lit")
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=2):
                        ckpt = gr.Dropdown(
                            models.choices(), value=str(ckpt_path), allow_custom_value=True,
                            label="Checkpoint (.ckpt or export)", elem_id="checkpoint",
                        )  # fmt: skip
                        prompts = gr.Textbox(
                            "\n".join(first.default_prompts[:2]),
                            lines=3,
                            label="Prompts, one a line",
                            elem_id="prompts",
                        )
                        with gr.Row():
                            generate_button = gr.Button(
                                "Generate", variant="primary", elem_id="generate"
                            )
                            stop_button = gr.Button("Stop", variant="stop")
                    with gr.Column(scale=1):
                        shown = min(defaults.num_images or IMAGES_PER_PROMPT, limits.images)
                        num_images = gr.Slider(
                            1, limits.images, value=shown, step=1, label="Images per prompt"
                        )
                        guidance = guidance_slider(
                            first, minimum=0, maximum=10, step=0.1, label="Guidance scale"
                        )
                        sampler = gr.Dropdown(
                            list(SAMPLERS), value=defaults.sampler, label="Sampler"
                        )
                        steps = steps_box(
                            first, defaults.steps, precision=0, minimum=1, label="Steps"
                        )
                        with gr.Row():
                            seed = gr.Number(defaults.seed, precision=0, minimum=0, label="Seed")
                            reseed = gr.Button("random seed", size="sm")
                        use_ema = gr.Checkbox(defaults.use_ema, label="EMA weights (else raw)")
                        adapters = gr.Dropdown(
                            models.adapter_choices(), value=[], multiselect=True,
                            label="LoRA adapters over it (made for this model)",
                        )  # fmt: skip
                        adapter_weights = gr.Textbox(
                            "", label="Adapter weights (1, 0.5, ...; blank: 1 each)"
                        )
                with gr.Accordion("Edit a picture (optional)", open=False):
                    with gr.Row():
                        picture = gr.File(
                            label="Picture to edit (PNG, JPEG, WebP, BMP)",
                            file_types=[".png", ".jpg", ".jpeg", ".webp", ".bmp"],
                            type="filepath", elem_id="picture",
                        )  # fmt: skip
                        mask = gr.File(
                            label="Mask: white is redrawn, black kept (its size)",
                            file_types=[".png", ".bmp"], type="filepath", elem_id="mask",
                        )  # fmt: skip
                        strength = gr.Slider(
                            0.05, 1, value=STRENGTH, step=0.05,
                            label="Strength (1: from noise; small keeps the picture)",
                        )  # fmt: skip
                info = gr.Markdown(elem_id="info")
                gallery = gr.Gallery(label="Images", columns=8, elem_id="gallery")
                grid = gr.File(label="Grid PNG")
                with gr.Accordion("What this model was trained to draw", open=False):
                    trained = gr.Markdown(vocabulary(first))
            with gr.Tab("Runs", id="runs"):
                table = gr.Dataframe(label=f"Runs under {runs_dir}", interactive=False)
                refresh = gr.Button("Refresh", size="sm")
                run = gr.Dropdown(label="Run", choices=[])
                with gr.Row():
                    run_ckpt = gr.Dropdown(label="Checkpoint", choices=[])
                    load = gr.Button("Generate with this checkpoint")
                with gr.Row():
                    export_ema = gr.Checkbox(
                        cli.compose("export").use_ema, label="export the EMA weights"
                    )
                    overwrite = gr.Checkbox(False, label="replace an existing export")
                    export_button = gr.Button("Export")
                exported = gr.Markdown()
                with gr.Row():
                    curves = gr.Image(label="curves.png", type="pil")
                    grids = gr.Gallery(
                        label="Sample grids", columns=2, height=420, elem_id="run-grids"
                    )
                with gr.Accordion("accuracy_log.txt", open=False):
                    accuracy = gr.Code(language=None)
                with gr.Accordion("Evaluations", open=True):
                    evaluations = gr.Markdown()
                with gr.Accordion("Config", open=False):
                    config = gr.Code(language="yaml")
                with gr.Accordion("Compare runs", open=False):
                    to_compare = gr.Dropdown(label="Runs", choices=[], multiselect=True)
                    compare = gr.Button("Compare")
                    comparison = gr.Code(language=None)

        job = generate_button.click(
            page.generate,
            [
                ckpt,
                prompts,
                num_images,
                guidance,
                sampler,
                steps,
                seed,
                use_ema,
                adapters,
                adapter_weights,
                picture,
                mask,
                strength,
            ],
            [gallery, grid, info],
            api_name="generate",
            concurrency_limit=concurrency,  # the others wait their turn in the queue
        )
        stop_button.click(page.stop, None, None, cancels=[job], api_name="stop")
        reseed.click(lambda: random.randint(0, checks.MAX_SEED), None, seed, api_name=False)
        described = [ckpt, use_ema, steps, adapters, adapter_weights]
        for changed in (ckpt.input, use_ema.change, adapters.change, adapter_weights.submit):
            changed(
                page.describe_model, described, [trained, steps, guidance], api_name=False
            )  # fmt: skip
        run_views = [curves, grids, accuracy, evaluations, config, run_ckpt]
        for event in (app.load, refresh.click):
            event(page.runs_table, None, [table, run, to_compare], api_name=False).then(
                page.show_run, run, run_views, api_name=False
            )
        run.input(page.show_run, run, run_views, api_name=False)
        load.click(page.use_checkpoint, run_ckpt, [ckpt, tabs], api_name=False).then(
            page.describe_model, described, [trained, steps, guidance], api_name=False
        )
        export_button.click(
            page.export, [run_ckpt, export_ema, overwrite], exported, api_name=False
        )
        compare.click(page.compare, to_compare, comparison, api_name=False)
    return app


def launch(
    app: gr.Blocks,
    host: str,
    port: int | None,
    out_dir: Path,
    block: bool = True,
    upload_bytes: int = Limits.upload_bytes,
):
    """Serves the page on ``host:port`` only: no share link, no server-side rendering (a Node
    process), errors shown in the page; of the server's files, only the page's own outputs
    (``out_dir``), and uploads of at most ``upload_bytes`` (a picture to edit and its mask,
    deleted after their job)."""
    return app.queue().launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,
        show_error=True,
        theme=THEME,
        allowed_paths=[str(out_dir)],
        max_file_size=upload_bytes,  # Gradio's upload route refuses a larger file
        footer_links=["api", "settings"],
        prevent_thread_lock=not block,
        quiet=not block,
    )
