"""The offline judge of sample quality: a small CNN classifier trained on the real images of the
data, once, and cached. Its predictions measure whether samples follow their prompt; its
features stand in for Inception's in FID, KID, diversity and precision/recall."""

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset

from diffusion_lit import checks
from diffusion_lit.errors import UserError
from diffusion_lit.models.layers import group_norm

log = logging.getLogger(__name__)

JUDGE_VERSION = 2  # the judge's layers and features; a cached judge of another is retrained


def _conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), group_norm(out_ch), nn.ReLU())


def _mean_and_std(h: torch.Tensor) -> torch.Tensor:
    return torch.cat([h.mean((2, 3)), h.std((2, 3))], dim=1)  # (B, 2C)


class ImageClassifier(nn.Module):
    """Three conv stages (the last two after 2×2 pooling), global average pooling, a
    ``num_features``-d feature layer and a linear head. Takes images in [−1, 1].

    :meth:`quality_features` is what the metrics compare: the per-channel mean and spread of
    the first two conv layers (strokes, edges, texture: what blur, noise and look-alike samples
    change, and what the last layer, made to name the class, has learned to ignore) next to
    the feature layer (shape and class), each scaled by :meth:`calibrate` to the same size on
    the real training images, so that neither drowns the other.
    """

    def __init__(
        self, in_channels: int, num_classes: int, width: int = 32, num_features: int = 128
    ):
        super().__init__()
        w = width
        self.conv1, self.conv2 = _conv(in_channels, w), _conv(w, w)
        self.rest = nn.Sequential(
            nn.MaxPool2d(2), _conv(w, 2 * w), _conv(2 * w, 2 * w), nn.MaxPool2d(2),
            _conv(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * w, num_features), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(num_features, num_classes)
        self.num_quality_features = 4 * w + num_features
        self.register_buffer("scales", torch.ones(2))  # early, late: set by calibrate()

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = self.conv1(x)
        h2 = self.conv2(h1)
        early = torch.cat([_mean_and_std(h1), _mean_and_std(h2)], dim=1)  # (B, 4w)
        return early, self.rest(h2)  # (B, 4w), (B, num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._features(x)[1])  # (B, num_classes) logits

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """The feature layer the head reads (as FID reads Inception's last pooling layer): the
        shape and class, not the texture; what the penultimate diversity compares."""
        return self._features(x)[1]

    def quality_features(self, x: torch.Tensor) -> torch.Tensor:
        early, late = self._features(x)
        return torch.cat([early / self.scales[0], late / self.scales[1]], dim=1)

    @torch.no_grad()
    def calibrate(self, images: torch.Tensor, batch_size: int = 512) -> None:
        """Scales each part of :meth:`quality_features` to unit mean variance on ``images``."""
        self.scales.fill_(1.0)
        parts = [self._features(chunk) for chunk in images.split(batch_size)]
        for i in range(2):
            self.scales[i] = torch.cat([p[i] for p in parts]).var(0).mean().sqrt()


class FeatureExtractor(nn.Module):
    """The judge's quality features as a torchmetrics FID/KID ``feature`` module."""

    def __init__(self, classifier: ImageClassifier):
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_quality_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.quality_features(x.float())


def train_classifier(
    train_set: Dataset,
    val_set: Dataset,
    in_channels: int,
    num_classes: int,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
) -> tuple[ImageClassifier, float]:
    """Trains the judge on real training images (a plain loop: a tiny supervised model needs no
    trainer); returns it with its accuracy on the held-out images."""
    checks.integer("epochs", epochs, 1, 10_000)
    checks.integer("batch_size", batch_size, 1, 1_000_000)
    checks.real("lr", lr, 0, 10, above=True)
    torch.manual_seed(seed)
    model = ImageClassifier(in_channels, num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, lr, total_steps=epochs * -(-len(train_set) // batch_size)
    )
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True)
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval().calibrate(stack(train_set)[0])
    return model, accuracy(model, val_set)


@torch.no_grad()
def predict(model: ImageClassifier, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([model(chunk).argmax(1) for chunk in images.split(batch_size)])


def stack(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (N, C, H, W) and labels (N,) of a dataset of tensors."""
    images, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(images), torch.tensor(labels)


def accuracy(model: ImageClassifier, dataset: Dataset) -> float:
    images, labels = stack(dataset)
    return (predict(model, images) == labels).float().mean().item()


def save_classifier(model: ImageClassifier, path: Path, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), path.with_suffix(".safetensors"))
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))


def has_classifier(path: Path) -> bool:
    return path.with_suffix(".safetensors").is_file() and path.with_suffix(".json").is_file()


def load_classifier(path: Path) -> tuple[ImageClassifier, dict]:
    weights, meta_path = path.with_suffix(".safetensors"), path.with_suffix(".json")
    if not weights.is_file() or not meta_path.is_file():
        raise UserError(
            f"No judge classifier at {weights}: train one first with "
            "`python -m diffusion_lit.evaluate train_classifier=true data=<the training data>`."
        )
    meta = json.loads(meta_path.read_text())
    model = ImageClassifier(meta["channels"], len(meta["classes"]))
    model.load_state_dict(load_file(weights))
    return model.eval(), meta


def judge_path(folder: Path, dataset: str, image_size: int, channels: int) -> Path:
    """Where the judge of a dataset at a size is cached (``<folder>/<Dataset>_<size>px_<c>ch_v2``
    .safetensors and .json)."""
    return Path(folder) / f"{dataset}_{image_size}px_{channels}ch_v{JUDGE_VERSION}"


def judge_for(datamodule, path: Path, retrain: bool = False, seed: int = 0, **training):
    """The judge for the data: trained on its training images and cached at ``path`` the first
    time (or with ``retrain``); else loaded from the cache. Returns it with its metadata
    (classes, size, channels, held-out accuracy). ``training``: :func:`train_classifier`'s
    epochs, batch_size and lr."""
    if not retrain and has_classifier(path):
        return load_classifier(path)
    log.info("Training the judge classifier for this data (cached as %s)", path)
    classes = datamodule.class_names
    judge, acc = train_classifier(
        datamodule.train_set, datamodule.val_set, datamodule.channels, len(classes), seed=seed,
        **training,
    )  # fmt: skip
    meta = {"classes": classes, "image_size": datamodule.image_size,
            "channels": datamodule.channels, "val_accuracy": acc}  # fmt: skip
    save_classifier(judge, path, meta)
    log.info("Judge classifier: %.1f%% on held-out images", 100 * acc)
    return judge, meta
