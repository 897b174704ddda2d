"""Offline sample-quality evaluation: a classifier trained on the real images judges whether
samples follow their prompt (conditional accuracy), and its quality features (early layers'
texture statistics next to the last layer's shape features) stand in for Inception's in FID and
KID (torchmetrics), per-class diversity and precision/recall (Kynkäänniemi et al. 2019), each
next to the same number for real images against real images."""

import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset, Subset
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from diffusion_lit.errors import UserError
from diffusion_lit.models.classifier import FeatureExtractor, ImageClassifier

log = logging.getLogger(__name__)


# -- the judge ------------------------------------------------------------------------------


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


def real_sets(datamodule, n: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """(images, labels) of the held-out images, which samples are compared with, and of ``n``
    training images, without augmentation (the val transform over train indices): the
    real-vs-real reference. ``n`` is the number of samples: FID and the k-NN radii of
    precision/recall depend on the set sizes, so the reference has the samples' size."""
    heldout = stack(datamodule.val_set)
    train_indices = datamodule.train_set.indices[:n]
    return heldout, stack(Subset(datamodule.val_set.dataset, train_indices))


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


# -- the metrics ----------------------------------------------------------------------------


@torch.no_grad()
def quality_features(judge: ImageClassifier, images: torch.Tensor, batch_size: int = 512):
    judge.eval()
    return torch.cat([judge.quality_features(chunk) for chunk in images.split(batch_size)])


@torch.no_grad()
def distribution_distance(
    judge: ImageClassifier, real: torch.Tensor, other: torch.Tensor, batch_size: int = 256
) -> dict[str, float]:
    """FID and KID between two image sets (in [−1, 1]) in the judge's quality features."""
    features = FeatureExtractor(judge).eval()
    n = min(len(real), len(other))
    fid = FrechetInceptionDistance(feature=features)
    # KID averages over random subsets; half the smaller set keeps them from all being equal
    kid = KernelInceptionDistance(
        feature=features, subset_size=max(2, min(1000, n // 2)), subsets=50
    )
    for metric in (fid, kid):
        for images, is_real in ((real, True), (other, False)):
            for chunk in images.split(batch_size):
                metric.update(chunk, real=is_real)
    kid_mean, kid_std = kid.compute()
    return {"fid": fid.compute().item(), "kid_mean": kid_mean.item(), "kid_std": kid_std.item()}


def diversity(
    real: torch.Tensor, real_labels: torch.Tensor, other: torch.Tensor, labels: torch.Tensor,
    class_names: list[str],
) -> dict:  # fmt: skip
    """Per class, the mean distance between two images' features, ``other`` ÷ ``real``: 1 as
    varied as the real images, 0 all alike; and its mean over the classes."""
    per_class = {}
    for c, name in enumerate(class_names):
        a, b = other[labels == c], real[real_labels == c]
        if len(a) > 1 and len(b) > 1:
            per_class[name] = (torch.pdist(a).mean() / torch.pdist(b).mean()).item()
    overall = sum(per_class.values()) / len(per_class) if per_class else float("nan")
    return {"diversity": overall, "per_class_diversity": per_class}


def precision_recall(real: torch.Tensor, other: torch.Tensor, k: int = 3) -> dict[str, float]:
    """Kynkäänniemi et al. 2019: precision, the share of ``other`` inside the real images'
    manifold (balls reaching each real feature's k-th nearest real neighbour): are they
    realistic; recall, the share of real images inside ``other``'s manifold: is all of the
    real variety covered."""

    def radii(x: torch.Tensor) -> torch.Tensor:
        return torch.cdist(x, x).kthvalue(min(k + 1, len(x)), dim=1).values  # +1: itself

    distances = torch.cdist(other, real)  # (other, real)
    precision = (distances <= radii(real)[None, :]).any(1).float().mean()
    recall = (distances.T <= radii(other)[None, :]).any(1).float().mean()
    return {"precision": precision.item(), "recall": recall.item()}


def conditional_accuracy(
    judge: ImageClassifier, images: torch.Tensor, labels: torch.Tensor, class_names: list[str]
) -> dict:
    """The fraction of images for class c that the judge assigns to c, overall and per class."""
    correct = (predict(judge, images) == labels).float()
    per_class = {
        name: correct[labels == c].mean().item()
        for c, name in enumerate(class_names)
        if (labels == c).any()
    }
    return {"conditional_accuracy": correct.mean().item(), "per_class_accuracy": per_class}


def compare(
    judge: ImageClassifier, real: torch.Tensor, real_labels: torch.Tensor, other: torch.Tensor,
    labels: torch.Tensor, class_names: list[str],
) -> dict:  # fmt: skip
    """FID, KID, diversity, precision and recall of ``other`` (in [−1, 1], drawn for ``labels``)
    against the real images."""
    real_features, features = quality_features(judge, real), quality_features(judge, other)
    return (
        distribution_distance(judge, real, other)
        | diversity(real_features, real_labels, features, labels, class_names)
        | precision_recall(real_features, features)
    )


def evaluate_samples(
    judge: ImageClassifier,
    samples: torch.Tensor,
    labels: torch.Tensor,
    real: tuple[torch.Tensor, torch.Tensor],
    reference: tuple[torch.Tensor, torch.Tensor],
    class_names: list[str],
) -> dict:
    """Every judge-based number for ``samples`` (in [−1, 1]) drawn for ``labels``, against the
    ``real`` (held-out images, labels), and the same for the ``reference`` (as many training
    images: real against real); FID and KID also as ratios to their real-vs-real values."""
    result = conditional_accuracy(judge, samples, labels, class_names)
    result |= compare(judge, *real, samples, labels, class_names)
    reference = compare(judge, *real, *reference, class_names)
    result |= {f"{key}_real_vs_real": value for key, value in reference.items()}
    result["fid_ratio"] = result["fid"] / reference["fid"]
    result["kid_ratio"] = result["kid_mean"] / max(reference["kid_mean"], reference["kid_std"])
    return result


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start
