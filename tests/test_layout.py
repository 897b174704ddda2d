"""The package's architecture, as its imports: each part imports only the parts below it, and
sampling needs neither Lightning nor Hydra."""

import ast
import subprocess
import sys

import pytest

from conftest import ROOT

PACKAGE = ROOT / "diffusion_lit"
# lowest first; a part may import its own modules and any part of a lower layer
LAYERS = [
    {"errors"},
    {"checks", "files", "images"},
    {"models", "text", "edit_images"},
    {"diffusion", "data", "runs"},
    {"modelfile"},
    {"training"},
    {"pipeline"},
    {"evaluation"},
    {"cli", "train", "sample", "evaluate", "export", "demo", "page"},
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def part_of(module: str) -> str:
    """``diffusion_lit.training.module`` → ``training``."""
    return module.split(".")[1]


def imports(path) -> set[str]:
    """The diffusion_lit modules a file imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            found |= {n for n in names if n.startswith("diffusion_lit.")}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("diffusion_lit.")}
    return found


def test_every_part_has_a_layer():
    parts = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert parts - {"__init__"} == set(RANK)


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_imports_flow_one_way(path):
    here = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    if here == "__init__":
        return
    upward = [
        module
        for module in imports(path)
        if part_of(module) != here and RANK[part_of(module)] >= RANK[here]
        and not (RANK[here] == len(LAYERS) - 1)  # the commands and the page use each other
    ]  # fmt: skip
    assert not upward, f"{here} (layer {RANK[here]}) imports {upward}"


@pytest.mark.slow
def test_sampling_needs_neither_lightning_nor_hydra():
    """Loading a model to sample builds the inference object, not the training module."""
    code = (
        "import sys, diffusion_lit.pipeline\n"
        "assert not {'lightning', 'hydra'} & {m.split('.')[0] for m in sys.modules}, "
        "sorted(m for m in sys.modules if m.startswith(('lightning', 'hydra')))[:5]"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_no_import_does_work():
    """Importing any module registers nothing, sets no global filter and never exits."""
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in sorted(PACKAGE.rglob("*.py"))
        if p.stem != "__main__"
    ]
    code = (
        # the libraries first: what they set on import is theirs
        "import importlib, warnings, gradio, hydra, lightning, peft, torchmetrics, torchvision\n"
        "from omegaconf import OmegaConf\n"
        "filters = list(warnings.filters)\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "assert warnings.filters == filters, 'a warning filter was set'\n"
        "names = ('run_file', 'fast_precision', 'resume_run_dir', 'config_subdir')\n"
        "assert not any(OmegaConf.has_resolver(n) for n in names), 'a resolver was registered'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
