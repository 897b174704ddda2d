"""A small CNN classifier: the offline judge of sample quality (its features stand in for
Inception's in FID/KID, its predictions measure whether samples follow their prompt)."""

import torch
from torch import nn

from diffusion_lit.models.layers import group_norm


def _conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), group_norm(out_ch), nn.ReLU())


class ImageClassifier(nn.Module):
    """Three conv stages (the last two after 2×2 pooling), global average pooling, a
    ``num_features``-d feature layer and a linear head. Takes images in [−1, 1]."""

    def __init__(
        self, in_channels: int, num_classes: int, width: int = 32, num_features: int = 128
    ):
        super().__init__()
        w = width
        self.num_features = num_features
        self.body = nn.Sequential(
            _conv(in_channels, w), _conv(w, w), nn.MaxPool2d(2),
            _conv(w, 2 * w), _conv(2 * w, 2 * w), nn.MaxPool2d(2),
            _conv(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * w, num_features), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, num_classes) logits


class FeatureExtractor(nn.Module):
    """The classifier's feature layer as a torchmetrics FID/KID ``feature`` module."""

    def __init__(self, classifier: ImageClassifier):
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x.float())
