"""What the page's buttons do: one method per button, each returning what its outputs show,
over the Python API and the run housekeeping, with no sampling logic of its own."""

import functools
import gc
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import gradio as gr
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from diffusion_lit import checks, cli
from diffusion_lit.diffusion.options import STRENGTH, SamplingOptions
from diffusion_lit.edit_images import open_image
from diffusion_lit.errors import UserError
from diffusion_lit.export import export
from diffusion_lit.files import inside, is_file
from diffusion_lit.modelfile.checkpoint import existing
from diffusion_lit.pipeline import TextToImage, prompt_folders
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


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the page (``conf/demo.yaml``), so that no visitor's job
    grows without bound or keeps the others waiting long: prompts, images per prompt, steps,
    network passes in all (prompts × images × steps, twice each for guidance), characters
    in a prompt and bytes in an uploaded picture (a picture to edit, its mask)."""

    prompts: int = 16
    images: int = 64
    steps: int = 1000
    evaluations: int = 200_000
    prompt_chars: int = 500
    upload_bytes: int = 4 * 2**20

    def __post_init__(self):
        for name, value in vars(self).items():
            checks.integer(f"max_{name}", value, 1, 10**9)

    def check(self, prompts: list[str], num_images, steps) -> None:
        """Refuses, in a line the page shows, a request beyond the limits."""
        checks.integer("num_images", num_images, 1, self.images)
        checks.integer("steps", steps, 1, self.steps)
        if len(prompts) > self.prompts:
            raise UserError(
                f"{len(prompts)} prompts at once is more than this page takes ({self.prompts}): "
                "send fewer, or run python -m diffusion_lit.sample for more."
            )
        if any(len(p) > self.prompt_chars for p in prompts):
            raise UserError(
                f"A prompt is longer than {self.prompt_chars} characters: shorten it (the text "
                "encoder reads only its first few dozen words)."
            )
        passes = 2 * len(prompts) * num_images * steps
        if passes > self.evaluations:
            raise UserError(
                f"{len(prompts)} prompts × {num_images} images × {steps} steps is "
                f"{passes:,} network passes, more than this page's {self.evaluations:,} for one "
                "request: ask for fewer images or steps."
            )


class Models:
    """The pipelines the page may load and has loaded. It loads only the checkpoint it was
    started with and the checkpoints and exports of the runs under ``runs_dir``, with the
    adapter folders of those runs over them (with ``allow_any_path``, for a trusted local user,
    any path), and answers every other path alike, so that the box tells a visitor nothing of
    the server's files. Each is read once per file time and weights, so a checkpoint rewritten
    by a running training is read again."""

    def __init__(self, device: str, runs_dir: Path, start: Path, allow_any_path: bool = False):
        self.device, self.runs_dir, self.start = device, runs_dir, start
        self.allow_any_path = allow_any_path
        self._load = functools.lru_cache(maxsize=4)(self._read)

    def choices(self) -> list[str]:
        """The models the page offers: the one it started with, then those of its runs."""
        found = [self.start]
        for run in map(RunDir, run_paths(self.runs_dir)):
            found += [*run.checkpoint_files(), *run.exports()]
        return list(dict.fromkeys(map(str, found)))

    def adapter_choices(self) -> list[str]:
        """The adapter folders the page offers: those of its runs."""
        return [str(a) for run in map(RunDir, run_paths(self.runs_dir)) for a in run.adapters()]

    def _read(self, path: str, mtime: float, use_ema: bool, adapters: tuple,
              weights: tuple | None) -> TextToImage:  # fmt: skip
        found = [a for a, _ in adapters]
        return TextToImage.from_checkpoint(path, self.device, use_ema, found, weights)

    def get(
        self, path: str, use_ema: bool, adapters: list[str] = (), weights: str = ""
    ) -> TextToImage:
        """The model ``path`` (one of :meth:`choices`), with ``adapters`` (of
        :meth:`adapter_choices`) weighted by ``weights`` (numbers separated by commas; blank:
        1 each)."""
        path = (path or "").strip()
        adapters = [a.strip() for a in adapters or [] if a and a.strip()]
        if not self.allow_any_path and (
            path not in self.choices() or not set(adapters) <= set(self.adapter_choices())
        ):
            raise UserError(
                f"Choose one of this page's models: the checkpoints and exports of the runs "
                f"under {self.runs_dir}, and their adapters (started with allow_any_path=true, "
                "any path)."
            )
        checked = existing(checks.path("ckpt_path", path or None))
        found = tuple((a, existing(Path(a), "adapters").stat().st_mtime) for a in adapters)
        return self._load(str(checked), checked.stat().st_mtime, use_ema, found,
                          adapter_weights(weights))  # fmt: skip


def adapter_weights(text: str) -> tuple[float, ...] | None:
    """The adapter weights box: numbers separated by commas; blank: None (1 each)."""
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    try:
        return tuple(float(t) for t in items) or None
    except ValueError:
        raise UserError(
            f"Adapter weights {text!r}: give numbers separated by commas (1, 0.5), one per "
            "adapter, or leave the box blank for 1 each."
        ) from None


def run_paths(runs_dir: Path) -> list[str]:
    """The runs under ``runs_dir``, oldest first; none yet is an empty list, not an error."""
    try:
        return [str(p) for p in find_runs([str(runs_dir)])]
    except UserError:
        return []


# what the Runs tab shows of a run: its newest sample grids, each PNG no larger than this
MAX_GRIDS, MAX_IMAGE_BYTES = 24, 8 * 2**20


def run_image(run: RunDir, path: Path) -> Image.Image | None:
    """One of the run's PNGs as a picture (not a path: the page serves no file of the run),
    None when it is not the run's, too large or unreadable."""
    path = run.file(path)
    try:
        if path is None or path.stat().st_size > MAX_IMAGE_BYTES:
            return None
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, Image.DecompressionBombError):
        return None


def prompt_lines(text: str) -> list[str]:
    prompts = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not prompts:
        raise UserError("The prompt box is empty: type a prompt, one a line (e.g. 'Draw a six').")
    return prompts


def vocabulary(pipe: TextToImage) -> str:
    """What the model was trained to draw, as markdown: a line per class (a few of each class's
    captions for a model of thousands), then per attribute."""
    lines = [
        f"- **{name}**: " + " · ".join(ps) + (f" … ({n} in all)" if len(ps) < n else "")
        for name, (ps, n) in pipe.listed().items()
    ]
    lines += [f"- *{name}*: " + " · ".join(ws) for name, ws in pipe.attributes.items()]
    return "\n".join(lines)


class Page:
    """The page's actions, one method per button; each returns what its outputs show.
    ``defaults``: the sample CLI's config, which the Generate tab starts from. A run, a
    checkpoint or a comparison is only ever one of the runs under ``runs_dir``: the page reads,
    writes and shows nothing else, whatever a request names."""

    def __init__(
        self, models: Models, runs_dir: Path, out_dir: Path, limits: Limits, defaults: DictConfig
    ):
        self.models, self.runs_dir, self.out_dir = models, runs_dir, out_dir
        self.limits, self.defaults = limits, defaults
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
        adapters: list[str] | None,
        weights: str,
        picture: str | None = None,  # defaults: the API's callers may leave them out
        mask: str | None = None,
        strength: float = STRENGTH,
        session: gr.Request = None,
        progress=gr.Progress(),  # noqa: B008 - Gradio's way to ask for it
    ):
        uploads = (picture, mask)
        try:  # the uploads are read into memory here; their files are gone after it
            picture, mask = self.uploaded(picture, "picture"), self.uploaded(mask, "mask")
        finally:
            self.forget(*uploads)
        prompts = prompt_lines(text)
        num_images, steps = as_int(num_images), as_int(steps)
        self.limits.check(prompts, num_images, steps)
        # the sample CLI's options with the page's values, checked as the command line checks them
        chosen = {"guidance_scale": guidance_scale, "sampler": sampler, "steps": steps,
                  "seed": as_int(seed), "strength": strength if picture else None}  # fmt: skip
        if mask is not None and picture is None:
            raise UserError("A mask needs the picture it masks: upload the picture too.")
        options = SamplingOptions.from_config(OmegaConf.merge(self.defaults, chosen))
        pipe = self.models.get(ckpt_path, checks.flag("use_ema", use_ema), adapters, weights)
        stop = self.stops[session.session_hash] = threading.Event()

        def step(done: int, total: int) -> None:  # the sampler's own steps, and the Stop button
            if stop.is_set():
                raise gr.Error(f"Stopped after {done - 1} of {total} steps.", print_exception=False)
            progress((done, total), desc="sampling", unit="steps")

        start = time.perf_counter()
        try:
            out = pipe(prompts, num_images, init_images=picture and [picture], mask=mask,
                       options=options, progress=False, callback=step)  # fmt: skip
        finally:  # a finished or stopped job gives its memory back
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        seconds = time.perf_counter() - start
        folder = self.out_dir / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        grid = pipe.save(out.images, prompts, folder)
        gallery = [
            (str(folder / name / f"{i:03d}.png"), prompt)
            for prompt, name in zip(prompts, prompt_folders(prompts), strict=True)
            for i in range(num_images)
        ]
        edit = "" if picture is None else (
            f", {'inpainting the white of the mask' if mask else 'editing the picture'} at "
            f"strength {options.start_strength(mask is not None):g}"
        )  # fmt: skip
        info = (
            f"{len(prompts) * num_images} images in {seconds:.1f} s ({options.sampler}, "
            f"{options.steps} steps, {out.guidance}, seed {options.seed}{edit}), saved in "
            f"`{folder}`"
        )
        notes = [f"⚠️ {note}" for note in out.unfamiliar] + out.substitutions
        info += "".join(f"\n\n{note}" for note in notes)
        return gallery, str(grid), info

    def uploaded(self, path: str | None, what: str) -> Image.Image | None:
        """An uploaded picture (a file in the page's upload folder, never any other), decoded
        within the bounds of :func:`~diffusion_lit.edit_images.open_image`."""
        if not path:
            return None
        if not inside(Path(path), upload_dir()):
            raise UserError(f"Upload the {what} to edit with the page's upload box.")
        if not is_file(Path(path)):
            raise UserError(f"The {what} is no longer on the server (the page keeps no upload "
                            "after its job): upload it again.")  # fmt: skip
        return open_image(Path(path), upload_dir())

    @staticmethod
    def forget(*uploads) -> None:
        """Deletes the page's copies of uploaded files (only ever in its upload folder)."""
        for path in uploads:
            if isinstance(path, str) and path and inside(Path(path), upload_dir()):
                Path(path).unlink(missing_ok=True)

    def stop(self, session: gr.Request) -> None:
        """Stops this browser session's sampling before its next step."""
        if (running := self.stops.get(session.session_hash)) is not None:
            running.set()

    @answered_in_page
    def describe_model(
        self, ckpt_path: str, use_ema: bool, steps: float, adapters=(), weights: str = ""
    ):
        """What a newly chosen model (with its adapters) draws, the steps box bounded by its T
        and the guidance slider at the model's own."""
        pipe = self.models.get(ckpt_path, use_ema, adapters, weights)
        return vocabulary(pipe), steps_box(pipe, steps), guidance_slider(pipe)

    # Runs

    def run(self, path: str | None) -> RunDir:
        """``path`` as one of the runs under ``runs_dir``; refused, alike, when it is not."""
        if path not in run_paths(self.runs_dir):
            raise UserError(f"Choose one of the runs under {self.runs_dir}.")
        return RunDir(path)

    def runs_table(self):
        paths = run_paths(self.runs_dir)
        rows = list_rows([summarize(Path(p)) for p in paths])
        header = list(rows[0]) if rows else ["run"]
        table = gr.Dataframe(value=[list(r.values()) for r in rows], headers=header)
        newest = paths[-1] if paths else None
        return table, gr.Dropdown(choices=paths, value=newest), gr.Dropdown(choices=paths)

    @answered_in_page
    def show_run(self, path: str | None):
        if not path:
            return None, [], "", "", "", gr.Dropdown(choices=[], value=None)
        run = self.run(path)
        grids = [(image, p.stem.replace("_", " ")) for p in sorted(run.samples.glob("*.png"))
                 [-MAX_GRIDS:] if (image := run_image(run, p)) is not None]  # fmt: skip
        accuracy = run.text(run.accuracy_log) or "(no accuracy_log.txt)"
        evaluations = "\n\n".join(
            f"### {d.name}\n\n{run.text(d / 'eval.md') or ''}" for d in run.evaluations()
        )
        config = run.text(run.config) or "(no .hydra/config.yaml)"
        ckpts = [str(p) for p in run.checkpoint_files()]
        last = str(run.last_checkpoint) if str(run.last_checkpoint) in ckpts else None
        return (
            run_image(run, run.curves),
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
        return compare_table([self.run(p).path for p in paths])

    @answered_in_page
    def export(self, ckpt_path: str | None, use_ema: bool, overwrite: bool) -> str:
        runs = map(RunDir, run_paths(self.runs_dir))
        if ckpt_path not in {str(p) for run in runs for p in run.checkpoint_files()}:
            raise UserError("Choose a checkpoint of one of the runs to export.")
        cfg = cli.compose("export")  # the export CLI's options, with the page's choices
        cfg.merge_with({"ckpt_path": ckpt_path, "use_ema": use_ema, "overwrite": overwrite})
        return f"Exported to `{export(cfg)}`"

    def use_checkpoint(self, ckpt_path: str | None):
        """Puts a run's checkpoint into the Generate tab and shows that tab."""
        if not ckpt_path:
            raise gr.Error("Choose a checkpoint first.", print_exception=False)
        return gr.Dropdown(choices=self.models.choices(), value=ckpt_path), gr.Tabs(
            selected="generate"
        )


def steps_box(pipe: TextToImage, steps: float | None, **kwargs) -> gr.Number:
    """The steps box for a model (or its update): at most its T."""
    timesteps = pipe.model.schedule.timesteps
    return gr.Number(min(steps or timesteps, timesteps), maximum=timesteps, **kwargs)


def guidance_slider(pipe: TextToImage, **kwargs) -> gr.Slider:
    """The guidance slider (or its update) at the model's own guidance scale."""
    return gr.Slider(value=pipe.spec.guidance.scale, **kwargs)


def upload_dir() -> Path:
    """Where Gradio keeps uploads: the page's ``.gradio`` folder (``GRADIO_TEMP_DIR``, set
    when the page is built)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or "/nonexistent-upload-folder")


def as_int(x):
    """A whole number from a number box (Gradio gives floats), anything else unchanged so the
    checks name it."""
    return int(x) if isinstance(x, float) and x.is_integer() else x
