"""The web page: ``python -m diffusion_lit.demo [ckpt_path=<.ckpt or export>] [runs_dir=outputs]``.

A thin Gradio page over the Python API, with no sampling logic of its own:

- **Generate**: prompts (one a line) → images, with a progress bar fed by the sampler's own steps,
  the time taken, the grid PNG to download and the note for prompts unlike the training prompts.
  The images are the sample CLI's for the same settings (they are written by the same code, to
  ``<out_dir>/<date_time>/``).
- **Runs**: the ``runs list`` table of a folder of runs; a run's curves, sample grids, accuracy
  log, evaluations and config; ``runs compare``; export a checkpoint, or load it to generate.

Offline and private: analytics off, no share link, bound to 127.0.0.1, system fonts only.
"""

import functools
import random
import threading
import time
from datetime import datetime
from pathlib import Path

try:
    import gradio as gr
except ImportError as err:  # an optional extra: say how to get it
    raise SystemExit(
        "error: the web page needs Gradio: pip install -e '.[demo]' (make setup installs it)."
    ) from err
import hydra
from omegaconf import DictConfig, OmegaConf

from diffusion_lit import checks
from diffusion_lit.errors import UserError, report_user_errors
from diffusion_lit.export import export
from diffusion_lit.pipeline import TextToImage, slugify
from diffusion_lit.resume import LAST, find_checkpoint
from diffusion_lit.run_dir import RunDir, find_runs, summarize
from diffusion_lit.runs import compare_table, list_rows
from diffusion_lit.samplers import SAMPLERS
from diffusion_lit.spec import guidance_text

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# no web fonts: Gradio's default theme would fetch IBM Plex from Google
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"],
    font_mono=["ui-monospace", "Consolas", "monospace"],
)


def cli_defaults(name: str) -> DictConfig:
    """The options of the ``name`` CLI as its yaml sets them (conf/<name>.yaml), so the page
    starts from the same settings as the command line."""
    cfg = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    cfg.pop("defaults", None)
    return cfg


def answered_in_page(fn):
    """A ``UserError`` (bad input, unreadable checkpoint) becomes the page's error message; the
    server keeps running."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            raise gr.Error(str(err), print_exception=False) from err

    return wrapper


class Models:
    """The pipelines the page has loaded, by checkpoint, its file time and the weights, so each
    is read once and a checkpoint rewritten by a running training is read again."""

    def __init__(self, device: str):
        self.device = device
        self._load = functools.lru_cache(maxsize=4)(self._read)

    def _read(self, path: str, mtime: float, use_ema: bool) -> TextToImage:
        return TextToImage.from_checkpoint(path, device=self.device, use_ema=use_ema)

    def get(self, path: str, use_ema: bool) -> TextToImage:
        given = OmegaConf.create({"ckpt_path": (path or "").strip() or None})
        checked = checks.model_path(given, "ckpt_path")
        return self._load(str(checked), checked.stat().st_mtime, use_ema)


def prompt_lines(text: str) -> list[str]:
    prompts = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not prompts:
        raise UserError("The prompt box is empty: type a prompt, one a line (e.g. 'Draw a six').")
    return prompts


def vocabulary(pipe: TextToImage) -> str:
    """What the model was trained to draw, as markdown: a line per class."""
    lines = [f"- **{name}**: " + " · ".join(ps) for name, ps in pipe.training_prompts.items()]
    return "\n".join(lines)


class Page:
    """The page's actions, one method per button; each returns what its outputs show."""

    def __init__(self, models: Models, runs_dir: Path, out_dir: Path, max_images: int):
        self.models, self.runs_dir, self.out_dir = models, runs_dir, out_dir
        self.max_images = max_images
        self.sample_defaults = cli_defaults("sample")  # the sample CLI's options
        self.stops: dict[str, threading.Event] = {}  # by browser session

    # Generate

    @answered_in_page
    def generate(
        self,
        ckpt_path: str,
        text: str,
        num_images: float,
        guidance_scale: float,
        sampler: str,
        steps: float,
        seed: float,
        use_ema: bool,
        session: gr.Request,
        progress=gr.Progress(),  # noqa: B008 - Gradio's way to ask for it
    ):
        prompts = prompt_lines(text)
        # the sample CLI's options with the page's values, checked as the command line checks them
        opts = OmegaConf.merge(
            self.sample_defaults,
            {
                "ckpt_path": ckpt_path,
                "num_images": as_int(num_images),
                "guidance_scale": guidance_scale,
                "sampler": sampler,
                "steps": as_int(steps),
                "seed": as_int(seed),
                "use_ema": use_ema,
                "device": self.models.device,
            },
        )
        options = checks.sampling(opts)
        checks.integer(opts, "num_images", 1, self.max_images)
        pipe = self.models.get(ckpt_path, use_ema)
        options = pipe.module.sampling_options(options)  # the model's interval
        text = pipe.embed(prompts)  # once for both notes
        notes = [f"⚠️ {note}" for note in pipe.unfamiliar(prompts, text)]
        drawn = pipe.drawn_as(prompts, text) if options["nearest_prompt"] else prompts
        notes += pipe.substitutions(prompts, drawn)
        stop = self.stops[session.session_hash] = threading.Event()

        def step(done: int, total: int) -> None:  # the sampler's own steps, and the Stop button
            if stop.is_set():
                raise gr.Error(f"Stopped after {done - 1} of {total} steps.", print_exception=False)
            progress((done, total), desc="sampling", unit="steps")

        start = time.perf_counter()
        images = pipe(prompts, num_images=opts.num_images, **options, progress=False, callback=step)
        seconds = time.perf_counter() - start
        out = self.out_dir / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        grid = pipe.save(images, prompts, out)
        gallery = [
            (str(out / slugify(prompt) / f"{i:03d}.png"), prompt)
            for prompt in prompts
            for i in range(opts.num_images)
        ]
        info = (
            f"{images.shape[0] * images.shape[1]} images in {seconds:.1f} s ({options['sampler']}, "
            f"{options['steps']} steps, {guidance_text(options)}, seed {options['seed']}), "
            f"saved in `{out}`"
        )
        info += "".join(f"\n\n{note}" for note in notes)
        return gallery, str(grid), info

    def stop(self, session: gr.Request) -> None:
        """Stops this browser session's sampling before its next step."""
        if (running := self.stops.get(session.session_hash)) is not None:
            running.set()

    @answered_in_page
    def describe_model(self, ckpt_path: str, use_ema: bool, steps: float):
        """What a newly chosen model draws, the steps box bounded by its T and the guidance
        slider at the model's own."""
        pipe = self.models.get(ckpt_path, use_ema)
        return vocabulary(pipe), steps_box(pipe, steps), guidance_slider(pipe)

    # Runs

    def run_paths(self) -> list[str]:
        try:
            return [str(p) for p in find_runs([str(self.runs_dir)])]
        except UserError:  # no runs yet: an empty table, not an error
            return []

    def runs_table(self):
        paths = self.run_paths()
        rows = list_rows([summarize(Path(p)) for p in paths])
        header = list(rows[0]) if rows else ["run"]
        table = gr.Dataframe(value=[list(r.values()) for r in rows], headers=header)
        newest = paths[-1] if paths else None
        return table, gr.Dropdown(choices=paths, value=newest), gr.Dropdown(choices=paths)

    @answered_in_page
    def show_run(self, path: str | None):
        if not path:
            return None, [], "", "", "", gr.Dropdown(choices=[], value=None)
        run = RunDir(path)
        curves = str(run.curves) if run.curves.is_file() else None
        grids = [(str(p), p.stem.replace("_", " ")) for p in sorted(run.samples.glob("*.png"))]
        accuracy = read_text(run.accuracy_log) or "(no accuracy_log.txt)"
        evaluations = "\n\n".join(
            f"### {d.name}\n\n{read_text(d / 'eval.md')}" for d in run.evaluations()
        )
        config = read_text(run.config) or "(no .hydra/config.yaml)"
        ckpts = sorted(str(p) for p in run.checkpoints.glob("*.ckpt"))
        last = str(run.last_checkpoint) if str(run.last_checkpoint) in ckpts else None
        return (
            curves,
            grids,
            accuracy,
            evaluations or "(no evaluations: python -m diffusion_lit.evaluate ckpt_path=...)",
            config,
            gr.Dropdown(choices=ckpts, value=last or (ckpts[-1] if ckpts else None)),
        )

    @answered_in_page
    def compare(self, paths: list[str] | None) -> str:
        if not paths or len(paths) < 2:
            raise UserError("Choose two or more runs to compare.")
        return compare_table([Path(p) for p in paths])

    @answered_in_page
    def export(self, ckpt_path: str | None, use_ema: bool, overwrite: bool) -> str:
        if not ckpt_path:
            raise UserError("Choose a checkpoint of the run to export.")
        cfg = cli_defaults("export")
        cfg.merge_with({"ckpt_path": ckpt_path, "use_ema": use_ema, "overwrite": overwrite})
        return f"Exported to `{export(cfg)}`"

    @staticmethod
    def use_checkpoint(ckpt_path: str | None):
        """Puts a run's checkpoint into the Generate tab and shows that tab."""
        if not ckpt_path:
            raise gr.Error("Choose a checkpoint first.", print_exception=False)
        return ckpt_path, gr.Tabs(selected="generate")


def steps_box(pipe: TextToImage, steps: float | None, **kwargs) -> gr.Number:
    """The steps box for a model (or its update): at most its T."""
    timesteps = pipe.module.schedule.timesteps
    return gr.Number(min(steps or timesteps, timesteps), maximum=timesteps, **kwargs)


def guidance_slider(pipe: TextToImage, **kwargs) -> gr.Slider:
    """The guidance slider (or its update) at the model's own guidance scale."""
    return gr.Slider(value=pipe.module.sampling["guidance_scale"], **kwargs)


def as_int(x):
    """A whole number from a number box (Gradio gives floats), anything else unchanged so the
    checks name it."""
    return int(x) if isinstance(x, float) and x.is_integer() else x


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def build_app(
    ckpt_path: str | Path,
    runs_dir: str | Path = "outputs",
    out_dir: str | Path = "outputs/demo",
    device: str = "auto",
    max_images: int = 64,
) -> gr.Blocks:
    """The page (not yet launched); ``ckpt_path`` is what the Generate tab starts with."""
    page = Page(Models(device), Path(runs_dir), Path(out_dir), max_images)
    defaults = page.sample_defaults
    first = page.models.get(str(ckpt_path), defaults.use_ema)  # a bad checkpoint stops the start
    with gr.Blocks(title="diffusion_lit", analytics_enabled=False) as app:
        gr.Markdown("# diffusion_lit")
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=2):
                        ckpt = gr.Textbox(str(ckpt_path), label="Checkpoint (.ckpt or export)")
                        prompts = gr.Textbox(
                            "\n".join(first.class_prompts[:2]),
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
                        num_images = gr.Slider(
                            1, max_images, value=min(defaults.num_images, max_images), step=1,
                            label="Images per prompt",
                        )  # fmt: skip
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
                        cli_defaults("export").use_ema, label="export the EMA weights"
                    )
                    overwrite = gr.Checkbox(False, label="replace an existing export")
                    export_button = gr.Button("Export")
                exported = gr.Markdown()
                with gr.Row():
                    curves = gr.Image(label="curves.png", type="filepath")
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
            [ckpt, prompts, num_images, guidance, sampler, steps, seed, use_ema],
            [gallery, grid, info],
            api_name="generate",
            concurrency_limit=1,  # one job at a time: each waits its turn in the queue
        )
        stop_button.click(page.stop, None, None, cancels=[job], api_name="stop")
        reseed.click(lambda: random.randint(0, checks.MAX_SEED), None, seed, api_name=False)
        for changed in (ckpt.submit, ckpt.blur, use_ema.change):
            changed(
                page.describe_model, [ckpt, use_ema, steps], [trained, steps, guidance],
                api_name=False,
            )  # fmt: skip
        run_views = [curves, grids, accuracy, evaluations, config, run_ckpt]
        for event in (app.load, refresh.click):
            event(page.runs_table, None, [table, run, to_compare], api_name=False).then(
                page.show_run, run, run_views, api_name=False
            )
        run.input(page.show_run, run, run_views, api_name=False)
        load.click(page.use_checkpoint, run_ckpt, [ckpt, tabs], api_name=False).then(
            page.describe_model, [ckpt, use_ema, steps], [trained, steps, guidance], api_name=False
        )
        export_button.click(
            page.export, [run_ckpt, export_ema, overwrite], exported, api_name=False
        )
        compare.click(page.compare, to_compare, comparison, api_name=False)
    return app


def launch(app: gr.Blocks, host: str, port: int | None, allowed: list[str], block: bool = True):
    """Serves the page on ``host:port`` only: no share link, no server-side rendering (a Node
    process), errors shown in the page."""
    return app.queue().launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,
        show_error=True,
        theme=THEME,
        allowed_paths=allowed,
        footer_links=["api", "settings"],
        prevent_thread_lock=not block,
        quiet=not block,
    )


def demo(cfg: DictConfig, block: bool = True) -> gr.Blocks:
    """Builds and serves the page (``block``: until stopped); the page's ``local_url`` says
    where."""
    runs_dir = checks.path(cfg, "runs_dir")
    ckpt_path = checks.model_path(cfg, optional=True) or find_checkpoint(LAST, runs_dir)
    out_dir = checks.out_dir(cfg)
    checks.device(cfg)
    port = checks.integer(cfg, "port", 1, 65535, optional=True)
    max_images = checks.integer(cfg, "max_images", 1, 10_000)
    app = build_app(ckpt_path, runs_dir, out_dir, cfg.device, max_images)
    launch(app, cfg.host, port, [str(runs_dir), str(out_dir)], block)
    return app


@hydra.main(config_path="../conf", config_name="demo", version_base="1.3")
@report_user_errors
def main(cfg: DictConfig) -> None:
    demo(cfg)


if __name__ == "__main__":
    main()
