"""The benchmark scripts run in smoke mode (tiny sizes, seconds), so they cannot rot."""

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, TINY, compose_train


def run_bench(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args, "--smoke"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.mark.slow
def test_throughput_bench_smoke():
    out = run_bench("throughput.py")
    assert "Lightning / plain" in out and "| smoke 8px×1 | enhanced | channels_last |" in out
    assert "diffusers UNet2DConditionModel" in out


@pytest.mark.slow
def test_sampler_diagnosis_bench_smoke(trained_run):
    run_dir, _, _ = trained_run
    out = run_bench("sampler_diagnosis.py", str(run_dir / "checkpoints" / "last.ckpt"),
                    "data.image_size=8")  # fmt: skip
    for first in ["DDPM 100 (the default)", "H1: ODE on the noisier half", "H4 clipping"]:
        assert f"| {first}" in out
    assert "x̂_0 high-frequency ÷ real" in out


@pytest.mark.slow
def test_sampling_bench_smoke(trained_run):
    run_dir, _, _ = trained_run
    out = run_bench("sampling.py", str(run_dir / "checkpoints" / "last.ckpt"), "data.image_size=8")
    # samplers, guidance scales, guidance scales in intervals, precisions
    for first in ["ddpm 4", "ddim 2", "dpmpp_2m 2", "dpmpp_2m_sde 3 high_noise η=1.5",
                  "dpmpp_2m_sde 3 quadratic η=1", "1", "3", "1 on [0, 1]", "3 on [0.4, 1]",
                  "32", "bf16-mixed"]:  # fmt: skip
        assert f"| {first} |" in out


@pytest.mark.slow
def test_step_grids_bench_smoke(trained_run):
    run_dir, _, _ = trained_run
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    out = run_bench("step_grids.py", ckpt, "data.image_size=8")
    for row in ["| 0 | DDPM 8 |", "| 0 | dpmpp_2m_sde 4 η = 1.5, high_noise |",
                "| 0 | DDPM, 8-step density on [0.2, 0.4) of the way, 4 elsewhere |",
                "| 0 | dpmpp_2m_sde 4 η = 1 + corrector |",
                "| dpmpp_2m_sde 4 η = 1.5 | "]:  # fmt: skip
        assert row in out


@pytest.mark.slow
def test_recipe_bench_smoke():
    out = run_bench("recipe.py")
    assert "| variant | steps | train s | accuracy | FID ÷ real |" in out
    assert "| + warm-up + cosine | " in out


@pytest.mark.slow
def test_time_to_quality_bench_smoke():
    out = run_bench("time_to_quality.py")
    assert "| recipe | min to accuracy ≥ 98 % | min to FID ≤ 1.5× real |" in out
    assert "| old |" in out and "| new (the defaults) |" in out


@pytest.mark.slow
def test_gpu_check_smoke():  # on a CPU: the levers without compiling, no sync check
    out = run_bench("gpu_check.py")
    assert "| 32-bit | " in out and "| + 4 loader workers, pinned memory | " in out
    assert "| dpmpp_2m, 3 | bf16 autocast | " in out and "| dpmpp_2m, 3 | 32-bit | " in out
    assert "diffusers UNet2DConditionModel, plain loop" in out


@pytest.mark.slow
def test_unfamiliar_bench_smoke(trained_run):
    run_dir, _, _ = trained_run
    out = run_bench("unfamiliar.py", str(run_dir / "checkpoints" / "last.ckpt"))
    assert "| 0.6 (the pipeline's) |" in out and "held-out phrasings let through" in out


@pytest.mark.slow
def test_phrasings_bench_smoke(tmp_path):
    from diffusion_lit.train import train

    # a model of the attribute captions: its reading, its words and the judge's ceiling on them
    overrides = [o for o in TINY if not o.startswith("data.attributes")]
    train(compose_train([*overrides, f"data.measure_cache={tmp_path}"], run_dir=tmp_path / "run"))
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    out = run_bench("phrasings.py", ckpt, "data=digits", "data.image_size=8", "steps=2",
                    f"data.measure_cache={tmp_path}")  # fmt: skip
    assert "| own embedding | " in out and "| nearest training caption | " in out
    assert "| in its words (the default) | " in out
    ceiling = re.search(r"real held-out images of each caption word \(images\): (.*)\.", out)
    words = re.findall(r"(thickness thin|thickness thick|slant slanted left|slant upright|"
                       r"slant slanted right) (\d+\.\d)% \((\d+)\)", ceiling[1])  # fmt: skip
    assert len(words) == 5 and all(int(n) > 0 for _, _, n in words)


@pytest.mark.slow
def test_retrieval_bench_smoke():  # text only: MiniLM finds every digit phrasing's class
    out = run_bench("retrieval.py")
    found = re.search(r"\| `text_encoder=minilm` \| digits \| (\d+)/(\d+) \(100%\) \| — \|", out)
    assert found and found[1] == found[2] and int(found[1]) >= 100


@pytest.mark.slow
def test_captions_bench_smoke():
    out = run_bench("captions.py", "--shares", "0.5", "--attribute-scales", "3", "--grid", "x")
    assert "| attribute_share 0.5, attribute_scale 3 |" in out and "attribute grid: " in out


@pytest.mark.slow
def test_extend_bench_smoke():
    out = run_bench("extend.py", "--modes", "full-generated,lora-generated")
    assert "| base (0–7), before |" in out and "| lora-generated |" in out


@pytest.mark.slow
def test_edit_bench_smoke(trained_run):
    run_dir, _, _ = trained_run
    out = run_bench("edit.py", str(run_dir / "checkpoints" / "last.ckpt"), "data=digits", "steps=5",
                    "--picture", "unused.png")  # fmt: skip
    for row in ["| 0.3 | ", "| 0.9 | ", "| 0 | its own class | ", "| 2 | the next class | "]:
        assert row in out
    assert "**thickness**" in out and "**slant**" in out and "identical |" in out
    assert "picture: " in out
