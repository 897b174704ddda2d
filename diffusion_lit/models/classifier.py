"""A small CNN classifier: the offline judge of sample quality. Its predictions measure whether
samples follow their prompt; its features stand in for Inception's in FID, KID, diversity and
precision/recall."""

import torch
from torch import nn

from diffusion_lit.models.layers import group_norm


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
