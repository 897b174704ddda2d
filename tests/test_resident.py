"""``data.resident=true``: the dataset kept on the training device, decoded once, yields the
batches the DataLoader yields at the same seed — every epoch, after a resume, and so trains to
the same weights."""

import pytest
import torch

from diffusion_lit.data.resident import ResidentLoader
from diffusion_lit.train import main as train_main
from diffusion_lit.train import train
from diffusion_lit.training.config import build

from conftest import TINY, compose_train

CAPTIONED = [*TINY[:1], *TINY[2:]]  # the digits with their attribute captions (rows per image)


def datamodule(resident: bool, overrides=TINY):
    cfg = compose_train([*overrides, f"data.resident={str(resident).lower()}"])
    dm = build(cfg.data, "data")
    dm.setup("fit")
    return dm


def batches(loader) -> list[tuple[torch.Tensor, ...]]:
    return [tuple(batch) for batch in loader]


@pytest.mark.parametrize("overrides", [TINY, CAPTIONED], ids=["class prompts", "captions"])
def test_the_same_batches_as_the_loader_every_epoch(overrides, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    loaders = [datamodule(r, overrides).train_dataloader() for r in (False, True)]
    assert isinstance(loaders[1], ResidentLoader) and len(loaders[0]) == len(loaders[1])
    for epoch in (0, 1):
        for loader in loaders:
            loader.sampler.set_epoch(epoch)
        plain, resident = map(batches, loaders)
        assert len(plain) == len(resident) == len(loaders[0])
        for a, b in zip(plain, resident, strict=True):
            assert len(a) == len(b) == 3
            for x, y in zip(a, b, strict=True):
                assert x.dtype == y.dtype and torch.equal(x, y)
    first, second = (batches(loaders[1])[0][0] for _ in range(2))
    assert torch.equal(first, second)  # an epoch's order is the sampler's, not a fresh draw
    val = [batches(datamodule(r).val_dataloader()) for r in (False, True)]
    pairs = [(x, y) for a, b in zip(*val, strict=True) for x, y in zip(a, b, strict=True)]
    assert pairs and all(torch.equal(x, y) for x, y in pairs)


def test_a_resumed_epoch_goes_on_where_it_stopped():
    loader = datamodule(True).train_dataloader()
    whole = batches(loader)
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    resumed = datamodule(True).train_dataloader()
    resumed.load_state_dict(state)
    rest = batches(resumed)
    assert len(rest) == len(whole) - 2
    assert all(torch.equal(a[0], b[0]) for a, b in zip(rest, whole[2:], strict=True))
    assert len(batches(resumed)) == len(whole)  # the epoch after: whole again


@pytest.mark.slow
def test_training_on_resident_data_reaches_the_same_weights(tmp_path):
    weights = []
    for resident in ("false", "true"):
        cfg = compose_train([*TINY, f"data.resident={resident}"], tmp_path / resident)
        _, objects = train(cfg)
        weights.append(objects["module"].net.state_dict())
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name


def test_resident_data_cannot_flip_at_random(run_cli):
    status, err = run_cli(train_main, [*TINY, "data.hflip=true", "data.resident=true"])
    assert status == 2 and err.count("\n") == 1
    assert "data.resident=true reads each image once" in err and "data.hflip=false" in err
