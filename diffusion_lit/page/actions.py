"""What the page's buttons do: one method per button, each returning what its outputs show,
over the Python API and the run housekeeping, with no sampling logic of its own."""

import functools
import threading
import time
from datetime import datetime
from pathlib import Path

import gradio as gr
from omegaconf import DictConfig, OmegaConf

from diffusion_lit import checks, cli
from diffusion_lit.diffusion.options import SamplingOptions
from diffusion_lit.errors import UserError
from diffusion_lit.export import export
from diffusion_lit.modelfile.checkpoint import existing
from diffusion_lit.pipeline import TextToImage, slugify
from diffusion_lit.runs.housekeeping import compare_table, list_rows
from diffusion_lit.runs.layout import RunDir
from diffusion_lit.runs.summary import find_runs, summarize


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
        checked = existing(checks.path("ckpt_path", (path or "").strip() or None))
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
    """The page's actions, one method per button; each returns what its outputs show.
    ``defaults``: the sample CLI's config, which the Generate tab starts from."""

    def __init__(
        self, models: Models, runs_dir: Path, out_dir: Path, max_images: int, defaults: DictConfig
    ):
        self.models, self.runs_dir, self.out_dir = models, runs_dir, out_dir
        self.max_images, self.defaults = max_images, defaults
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
        chosen = {"guidance_scale": guidance_scale, "sampler": sampler,
                  "steps": as_int(steps), "seed": as_int(seed)}  # fmt: skip
        options = SamplingOptions.from_config(OmegaConf.merge(self.defaults, chosen))
        num_images = checks.integer("num_images", as_int(num_images), 1, self.max_images)
        pipe = self.models.get(ckpt_path, checks.flag("use_ema", use_ema))
        stop = self.stops[session.session_hash] = threading.Event()

        def step(done: int, total: int) -> None:  # the sampler's own steps, and the Stop button
            if stop.is_set():
                raise gr.Error(f"Stopped after {done - 1} of {total} steps.", print_exception=False)
            progress((done, total), desc="sampling", unit="steps")

        start = time.perf_counter()
        out = pipe(prompts, num_images, options=options, progress=False, callback=step)
        seconds = time.perf_counter() - start
        folder = self.out_dir / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        grid = pipe.save(out.images, prompts, folder)
        gallery = [
            (str(folder / slugify(prompt) / f"{i:03d}.png"), prompt)
            for prompt in prompts
            for i in range(num_images)
        ]
        info = (
            f"{len(prompts) * num_images} images in {seconds:.1f} s ({options.sampler}, "
            f"{options.steps} steps, {out.guidance}, seed {options.seed}), saved in `{folder}`"
        )
        notes = [f"⚠️ {note}" for note in out.unfamiliar] + out.substitutions
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
        cfg = cli.compose("export")  # the export CLI's options, with the page's choices
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
    timesteps = pipe.model.schedule.timesteps
    return gr.Number(min(steps or timesteps, timesteps), maximum=timesteps, **kwargs)


def guidance_slider(pipe: TextToImage, **kwargs) -> gr.Slider:
    """The guidance slider (or its update) at the model's own guidance scale."""
    return gr.Slider(value=pipe.model.guidance.scale, **kwargs)


def as_int(x):
    """A whole number from a number box (Gradio gives floats), anything else unchanged so the
    checks name it."""
    return int(x) if isinstance(x, float) and x.is_integer() else x


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
