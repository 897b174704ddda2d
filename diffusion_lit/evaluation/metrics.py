"""Sample quality in the judge's features: FID and KID (torchmetrics), per-class diversity,
precision/recall (Kynkäänniemi et al. 2019) and conditional accuracy, each next to the same
number for real images against real images; and the standard Inception FID and CLIPScore
where their weights are at hand."""

import time

import torch
from torch.utils.data import Subset
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from diffusion_lit.evaluation.judge import FeatureExtractor, ImageClassifier, predict, stack


def real_sets(
    datamodule, n: int, classes: list[int] | None = None
) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """(images, labels) of the held-out images, which samples are compared with, and of ``n``
    training images, without augmentation (the val transform over train indices): the
    real-vs-real reference; of the ``classes`` (numbers; None: all) only. ``n`` is the number
    of samples: FID and the k-NN radii of precision/recall depend on the set sizes, so the
    reference has the samples' size."""
    dataset, targets = datamodule.val_set.dataset, datamodule.val_set.dataset.targets
    keep = set(range(len(datamodule.class_names))) if classes is None else set(classes)

    def of_classes(indices: list[int]) -> list[int]:
        return [i for i in indices if int(targets[i]) in keep]

    heldout = stack(Subset(dataset, of_classes(datamodule.val_set.indices)))
    return heldout, stack(Subset(dataset, of_classes(datamodule.train_set.indices)[:n]))


@torch.no_grad()
def quality_features(judge: ImageClassifier, images: torch.Tensor, batch_size: int = 512):
    judge.eval()
    return torch.cat([judge.quality_features(chunk) for chunk in images.split(batch_size)])


@torch.no_grad()
def penultimate_features(judge: ImageClassifier, images: torch.Tensor, batch_size: int = 512):
    judge.eval()
    return torch.cat([judge.penultimate(chunk) for chunk in images.split(batch_size)])


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
    # the variety of shapes within a class alone, as FID's Inception features see images:
    # blur and noise do not add to it as they do to the texture features
    penultimate = diversity(
        penultimate_features(judge, real), real_labels, penultimate_features(judge, other),
        labels, class_names,
    )["diversity"]  # fmt: skip
    return (
        distribution_distance(judge, real, other)
        | diversity(real_features, real_labels, features, labels, class_names)
        | {"penultimate_diversity": penultimate}
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


def to_rgb01(x: torch.Tensor) -> torch.Tensor:
    """[−1, 1] images with 1 or 3 channels → RGB in [0, 1], as the standard metrics take them."""
    return ((x + 1) / 2).clamp(0, 1).expand(-1, 3, -1, -1)


def standard_metrics(
    real: torch.Tensor, fake: torch.Tensor, prompts: list[str], inception_weights, clip_model
) -> dict:
    """Inception FID and CLIPScore where their weights are given (a path, a model name or
    folder); a note for each that is skipped. An optional extra: never fails the evaluation."""
    result, notes = {}, {}
    if inception_weights:
        try:
            fid = FrechetInceptionDistance(
                feature_extractor_weights_path=str(inception_weights), normalize=True
            )
            fid.update(to_rgb01(real), real=True)
            fid.update(to_rgb01(fake), real=False)
            result["fid_inception"] = fid.compute().item()
        except Exception as err:
            notes["fid_inception"] = f"skipped: {err}"
    else:
        notes["fid_inception"] = "skipped: no Inception weights offline (inception_weights=<path>)"
    if clip_model:
        try:
            from torchmetrics.multimodal.clip_score import CLIPScore

            score = CLIPScore(model_name_or_path=clip_model)
            images = (to_rgb01(fake) * 255).to(torch.uint8)
            result["clip_score"] = score(images, prompts).item()
        except Exception as err:
            notes["clip_score"] = f"skipped: {err}"
    else:
        notes["clip_score"] = "skipped: no CLIP weights offline (clip_model=<name or path>)"
    return result | ({"notes": notes} if notes else {})
