"""The README and docs/ say what works: every link leads somewhere, and every
``python -m diffusion_lit...`` command they show parses against its command's config (composed,
not run)."""

import importlib.util
import re
import shlex
import subprocess
import sys

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from diffusion_lit import cli
from diffusion_lit.runs.__main__ import parser as runs_parser

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HYDRA_COMMANDS = {"train", "sample", "evaluate", "export", "demo"}  # each its config's name


def slug(heading: str) -> str:
    """A heading's anchor, as GitHub and mkdocs' toc make it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return re.sub(r" ", "-", text)


def anchors(path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(h) for h in re.findall(r"^#+ (.*)$", text, flags=re.M)}


def links(path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def commands(path) -> list[str]:
    """The ``python -m diffusion_lit...`` commands of a page's code blocks and inline code, a
    continued line joined, comments and what follows ``;``/``&&`` cut."""
    text = path.read_text()
    found = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*", "", line)  # a comment
            found += re.findall(r"python -m (diffusion_lit[^;&|]*)", line)
    for code in re.findall(r"`([^`\n]*python -m diffusion_lit[^`\n]*)`", text):
        found += re.findall(r"python -m (diffusion_lit[^#;&|]*)", code)
    return [re.sub(r"<[^<>]+>", "PLACEHOLDER", c.strip()) for c in found]  # <run>: the user's


def first_run(overrides: list[str]) -> list[str]:
    """A multirun's overrides as its first run has them (a sweep's first value), without
    Hydra's own keys (the launcher's)."""
    runs = []
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.get_key_element()
        if not key.startswith("hydra"):
            sweep = o.is_sweep_override()
            runs.append(f"{key}={next(iter(o.sweep_string_iterator()))}" if sweep else o.input_line)
    return runs


def test_the_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_leads_somewhere(page):
    broken = []
    for link in links(page):
        if re.match(r"[a-z]+://|mailto:", link):
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(link)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(link)
    assert not broken, f"{page.name}: {broken}"


def test_the_pages_show_commands():  # so that the next test checks something
    assert sum(len(commands(p)) for p in PAGES) >= 40


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_parses_against_its_config(page):
    failures = []
    for command in commands(page):
        module, *args = shlex.split(command)
        name = module.removeprefix("diffusion_lit.")
        if name in HYDRA_COMMANDS:
            overrides = [a for a in args if a not in ("-m", "--multirun")]
            try:
                cli.compose(name, first_run(overrides))
            except Exception as err:
                failures.append(f"python -m {command}: {str(err).splitlines()[0]}")
        elif name == "runs" and args:  # bare, it names the command
            runs_parser().parse_args(args)
        elif "PLACEHOLDER" not in module and importlib.util.find_spec(module) is None:
            failures.append(f"python -m {command}: no such module")
    assert not failures, "\n".join(failures)


def test_the_docs_build_offline(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "sampling" / "index.html").exists()
