"""Every CLI fed wild values for its main options (Hypothesis): negative, zero, huge, NaN, inf,
empty, wrong types, unicode, missing paths, folders for files and files for folders. Each run
must end in success or in exit status 2 with exactly one ``error:`` line and no traceback, and
leave every file that was on disk before unchanged (but for the output folder it was told to
write into). ``DIFFUSION_LIT_FUZZ_EXAMPLES`` sets the examples per CLI (default 10)."""

import hashlib
import itertools
import math
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffusion_lit import evaluate, export, sample, train
from diffusion_lit.runs import __main__ as runs

from conftest import TINY

pytestmark = pytest.mark.slow  # each CLI many times over

EXAMPLES = int(os.environ.get("DIFFUSION_LIT_FUZZ_EXAMPLES", "10"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("DIFFUSION_LIT_FUZZ_EXAMPLES") is None,  # CI: the same examples
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# path-like values, made in the workspace; any option may get one
PATHS = ["<missing>", "<folder>", "<file>", "<empty>", "<ckpt>", "<export>", "<unicode>"]
WORDS = [
    "ddpm",
    "ddim",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "trailing",
    "linspace",
    "cpu",
    "auto",
    "cuda",
    "last",
]
text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\\'${}"), max_size=8
)
# half plausible (so that runs also succeed, and write), half wild
plausible = st.one_of(
    st.integers(0, 4), st.floats(0, 1), st.booleans(), st.sampled_from(PATHS + WORDS)
)
wild = st.one_of(
    st.sampled_from([-1, -7, 10**6, 2**31, 2**63, -(2**63), 10**30]),
    st.floats(),  # NaN and ±inf included
    st.none(),
    text,
)
scalar = st.one_of(plausible, wild)
value = st.one_of(scalar, st.lists(scalar, max_size=3))


def overrides(options: list[str]):
    return st.dictionaries(st.sampled_from(options), value, min_size=1, max_size=3)


@pytest.fixture(scope="module")
def workspace(trained_run, tmp_path_factory) -> Path:
    """A copy of a trained run (checkpoint, logs, grids), its export, a judge classifier, and
    files and folders for the path values."""
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(trained_run[0], root / "outputs" / "runs" / "run")
    ckpt = root / "outputs" / "runs" / "run" / "checkpoints" / "last.ckpt"
    export.export(_export_cfg(ckpt, root / "export"))
    (root / "folder").mkdir()
    (root / "file.txt").write_text("not a model\n")
    (root / "empty.ckpt").write_bytes(b"")
    (root / "ünïcødé ✓.ckpt").write_bytes(b"\x80not a checkpoint")
    judge_args = ["train_classifier=true", "data=digits", "data.image_size=8",
                  "classifier.epochs=1", f"classifier.dir={root}/classifiers"]  # fmt: skip
    evaluate.evaluate(_compose("evaluate", judge_args))
    return root


def _compose(name, args):
    from hydra import compose, initialize_config_dir

    from conftest import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(name, overrides=args)


def _export_cfg(ckpt, out_dir):
    return _compose("export", [f"ckpt_path={ckpt}", f"out_dir={out_dir}", "grid_steps=2"])


def resolve(x, root: Path):
    """A drawn value with its path tokens made real paths."""
    paths = {
        "<missing>": root / "missing" / "nothing.ckpt",
        "<folder>": root / "folder",
        "<file>": root / "file.txt",
        "<empty>": root / "empty.ckpt",
        "<ckpt>": root / "outputs" / "runs" / "run" / "checkpoints" / "last.ckpt",
        "<export>": root / "export",
        "<unicode>": root / "ünïcødé ✓.ckpt",
    }
    if isinstance(x, list):
        return [resolve(v, root) for v in x]
    return str(paths[x]) if isinstance(x, str) and x in paths else x


def hydra_value(x) -> str:
    """``x`` in Hydra's override syntax."""
    if isinstance(x, list):
        return "[" + ",".join(hydra_value(v) for v in x) + "]"
    if x is None or isinstance(x, bool):
        return {None: "null", True: "true", False: "false"}[x]
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    if isinstance(x, int | float):
        return repr(x)
    return "'" + x.replace("'", "\\'") + "'"


def snapshot(root: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def assert_clean_ending(status: int, stderr: str) -> None:
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert (status, len(errors)) in ((0, 0), (2, 1)), (status, stderr[-3000:])


def assert_unchanged(before: dict[Path, str], root: Path, told: object) -> None:
    """Every file from ``before`` is still there, unchanged, unless it lies in ``told``, the
    output folder the command was given."""
    told = Path(told) if isinstance(told, str) and told.strip() else None
    after = snapshot(root)
    for path, digest in before.items():
        if told is not None and told.resolve() in (path.resolve(), *path.resolve().parents):
            continue
        assert after.get(path) == digest, f"{path} was changed or deleted"


counter = itertools.count()


def fuzz(cli, base: list[str], drawn: dict, root: Path, run_cli, monkeypatch) -> None:
    monkeypatch.chdir(root)
    drawn = {key: resolve(x, root) for key, x in drawn.items()}
    args = base + [f"{key}={hydra_value(x)}" for key, x in drawn.items()]
    if cli is not export:  # Hydra's own job folder, one per run
        args.append(f"hydra.run.dir={root}/jobs/{next(counter)}")
    before = snapshot(root)
    assert_clean_ending(*run_cli(cli.main, args))
    assert_unchanged(before, root, drawn.get("out_dir"))


SAMPLING = ["ckpt_path", "guidance_scale", "sampler", "steps", "timestep_spacing", "eta",
            "use_ema", "seed", "batch_size", "device", "out_dir", "precision",
            "guidance_interval"]  # fmt: skip


@FUZZ
@given(drawn=overrides([*SAMPLING, "prompts", "num_images"]))
def test_sample_cli(workspace, run_cli, monkeypatch, drawn):
    base = [f"ckpt_path={workspace}/export", "num_images=1", "steps=2", "device=cpu",
            f"out_dir={workspace}/samples/{next(counter)}"]  # fmt: skip
    fuzz(sample, base, drawn, workspace, run_cli, monkeypatch)


@FUZZ
@given(drawn=overrides([*SAMPLING, "images_per_class", "data.batch_size", "clip_model"]))
def test_evaluate_cli(workspace, run_cli, monkeypatch, drawn):
    base = [f"ckpt_path={workspace}/export", "data=digits", "images_per_class=2",
            "phrasing_images_per_class=1", "attribute_images_per_class=1", "steps=2", "device=cpu",
            f"classifier.dir={workspace}/classifiers",
            f"out_dir={workspace}/evaluations/{next(counter)}"]  # fmt: skip
    fuzz(evaluate, base, drawn, workspace, run_cli, monkeypatch)


@FUZZ
@given(drawn=overrides(["ckpt_path", "out_dir", "use_ema", "overwrite", "grid_steps",
                        "guidance_scale", "guidance_interval"]))  # fmt: skip
def test_export_cli(workspace, run_cli, monkeypatch, drawn):
    ckpt = workspace / "outputs" / "runs" / "run" / "checkpoints" / "last.ckpt"
    base = [f"ckpt_path={ckpt}", f"out_dir={workspace}/exports/{next(counter)}", "grid_steps=2"]
    fuzz(export, base, drawn, workspace, run_cli, monkeypatch)


TRAIN_OPTIONS = [
    "seed", "ckpt_path", "channels_last", "data.batch_size", "data.image_size",
    "data.prompt_templates", "data.val_fraction", "optimizer.lr", "schedule.timesteps",
    "schedule.kind", "model.base_channels", "model.time_dim", "trainer.max_epochs",
    "trainer.precision", "trainer.accelerator", "own_sampling.guidance_scale",
    "own_sampling.guidance_interval",
]  # fmt: skip


@FUZZ
@given(drawn=overrides(TRAIN_OPTIONS))
def test_train_cli(workspace, run_cli, monkeypatch, drawn):
    base = [*TINY, "trainer.fast_dev_run=true", f"paths.output_dir={workspace}/outputs"]
    fuzz(train, base, drawn, workspace, run_cli, monkeypatch)


@FUZZ
@given(
    argv=st.lists(
        st.one_of(
            st.sampled_from(["list", "compare", "prune", "--json", "--keep", "--help", "--x"]),
            st.sampled_from([*PATHS, "<outputs>"]),
            st.integers(-3, 3).map(str),
            text,
        ),
        max_size=5,
    )
)
def test_runs_cli(workspace, run_cli, monkeypatch, argv):
    """``runs`` with any arguments (but ``--yes``: deleting is what prune --yes is for)."""
    monkeypatch.chdir(workspace)
    argv = [str(workspace / "outputs") if a == "<outputs>" else resolve(a, workspace) for a in argv]
    before = snapshot(workspace)
    assert_clean_ending(*run_cli(runs.main, argv, hydra=False))
    assert_unchanged(before, workspace, None)
