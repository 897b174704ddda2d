"""A training run directory's layout: :class:`RunDir`, the one place that knows where a run
keeps its files (the training configs name them through the ``${run_file:...}`` resolver), and
that a run's files are only those inside it: a link that leads out of the run is never
followed, to read, write or delete."""

import re
from pathlib import Path

from diffusion_lit import files

# what reading one of a run's text files may take (logs, configs, reports are far smaller)
MAX_TEXT_BYTES = 64 * 2**20


class RunDir:
    """Where a run keeps its files::

    <run>/.hydra/config.yaml              the composed config (overrides.yaml beside it)
    <run>/checkpoints/last.ckpt           the newest state; best-epochNNN.ckpt the best
    <run>/checkpoints/eval-<ckpt>-<settings>/   evaluations of a checkpoint
    <run>/accuracy_log.txt                the seed's per-epoch pseudo-accuracy
    <run>/logs/metrics.csv                the CSV logger's metrics
    <run>/samples/epoch_NNN.png, final.png   sample grids
    <run>/curves.png                      training curves
    <run>/wandb_id.txt                    the wandb run id, kept for resuming
    <run>/hpc_ckpt_N.ckpt                 Lightning's, when SLURM signals a job before its end
    """

    CONFIG_DIR = ".hydra"
    LAST_CHECKPOINT = "checkpoints/last.ckpt"
    # Lightning names a second "last" in the same folder last-v1.ckpt: it is as much the last one
    LAST = re.compile(r"last(-v\d+)?\.ckpt")

    def __init__(self, path: str | Path):
        self.path = Path(path)

    config = property(lambda self: self.path / self.CONFIG_DIR / "config.yaml")
    overrides = property(lambda self: self.path / self.CONFIG_DIR / "overrides.yaml")
    checkpoints = property(lambda self: self.path / "checkpoints")
    last_checkpoint = property(lambda self: self.path / self.LAST_CHECKPOINT)
    accuracy_log = property(lambda self: self.path / "accuracy_log.txt")
    logs = property(lambda self: self.path / "logs")
    metrics = property(lambda self: self.logs / "metrics.csv")
    samples = property(lambda self: self.path / "samples")
    final_grid = property(lambda self: self.samples / "final.png")
    curves = property(lambda self: self.path / "curves.png")
    wandb_id = property(lambda self: self.path / "wandb_id.txt")
    # Lightning's name in its default_root_dir (the run dir), hpc_save_path
    hpc_checkpoints = property(lambda self: sorted(self.path.glob("hpc_ckpt_*.ckpt")))

    @staticmethod
    def evaluation_dir(checkpoint: Path, settings: str) -> Path:
        """Where an evaluation of ``checkpoint`` with ``settings`` goes: next to it."""
        return checkpoint.parent / f"eval-{checkpoint.stem}-{settings}"

    @classmethod
    def evaluation_dirs(cls, checkpoint: Path) -> list[Path]:
        """The evaluations of ``checkpoint`` (``*.ckpt``: of every checkpoint in its folder)."""
        pattern = cls.evaluation_dir(checkpoint, "*")
        return sorted(pattern.parent.glob(pattern.name))

    def evaluations(self, checkpoint: str = "*") -> list[Path]:
        """The evaluation folders of this run's checkpoint (by file stem; of any by default)."""
        found = self.evaluation_dirs(self.checkpoints / f"{checkpoint}.ckpt")
        return [d for d in found if self.inside(d)]

    @classmethod
    def of_checkpoint(cls, checkpoint: Path) -> "RunDir | None":
        """The run a checkpoint was written in (``<run>/checkpoints/x.ckpt``), if any."""
        inside = checkpoint.parent.name == Path(cls.LAST_CHECKPOINT).parent.name
        return cls(checkpoint.parent.parent) if inside else None

    def inside(self, path: Path) -> bool:
        """Whether ``path`` lies in this run once every link is resolved."""
        return files.inside(path, self.path)

    def file(self, path: Path) -> Path | None:
        """``path`` when it is a regular file inside this run, else None."""
        return path if files.is_file(path, self.path) else None

    def text(self, path: Path, limit: int = MAX_TEXT_BYTES) -> str | None:
        """A text file of this run (at most ``limit`` bytes, else None), as text."""
        try:
            return files.read_bytes(path, limit, self.path).decode("utf-8", errors="replace")
        except files.Refused:
            return None

    def checkpoint_files(self) -> list[Path]:
        """The run's checkpoint files (``checkpoints/*.ckpt`` inside the run), sorted."""
        return sorted(p for p in self.checkpoints.glob("*.ckpt") if self.file(p))

    @staticmethod
    def export_dir(checkpoint: Path, use_ema: bool = True, adapter: bool = False) -> Path:
        """Where the export CLI writes ``checkpoint``'s export by default: next to it, as
        ``export-<ckpt>[-raw]`` (a model) or ``adapter-<ckpt>[-raw]`` (a LoRA fine-tune's
        adapter)."""
        kind = "adapter" if adapter else "export"
        return checkpoint.parent / f"{kind}-{checkpoint.stem}{'' if use_ema else '-raw'}"

    def exports(self) -> list[Path]:
        """The export folders the export CLI writes by default into ``checkpoints/``."""
        found = self.checkpoints.glob("export-*/config.json")
        return sorted(p.parent for p in found if self.file(p) and self.holds(p.parent))

    def adapters(self) -> list[Path]:
        """The adapter folders the export CLI writes by default into ``checkpoints/``."""
        found = self.checkpoints.glob("adapter-*/adapter.json")
        return sorted(p.parent for p in found if self.file(p) and self.holds(p.parent))

    def holds(self, folder: Path) -> bool:
        """Whether every entry of ``folder`` lies in this run (no file of it links out)."""
        try:
            return all(self.inside(p) for p in folder.iterdir())
        except OSError:
            return False

    @classmethod
    def is_last(cls, checkpoint: Path) -> bool:
        """Whether a checkpoint file is a run's newest state (``last.ckpt``, ``last-v1.ckpt``)."""
        return cls.LAST.fullmatch(checkpoint.name) is not None


def run_file(name: str, *, _root_) -> str:
    """``${run_file:checkpoints}`` in a training config: that file or folder of this run."""
    return str(getattr(RunDir(_root_.paths.run_dir), name))
