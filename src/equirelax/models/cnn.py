"""A small unconstrained CNN classifier: the pretrained predictor of the adaptation protocol."""

from __future__ import annotations

from torch import Tensor, nn

from equirelax._checks import check_positive_int, check_tensor

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """``conv5 -> ReLU -> maxpool2 -> conv5 -> ReLU -> maxpool2 -> avgpool to 4x4 -> MLP``.

    No symmetry: the flattened 4x4 feature grid keeps where things are, so the network is
    orientation-sensitive, like the pretrained networks canonicalization adapts (Mondal et al.,
    NeurIPS 2023, arXiv 2310.01647).

    Parameters
    ----------
    in_channels, num_classes:
        Image channels and classes (logits ``(B, num_classes)``).
    hidden:
        Channels of the first convolution (the second has twice as many).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, hidden: int = 32) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        classes = check_positive_int("num_classes", num_classes)
        width = check_positive_int("hidden", hidden)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(), nn.Linear(128, classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = check_tensor("x", x)
        if x.ndim != 4 or x.shape[1] != self.in_channels or min(x.shape[-2:]) < 4:
            raise ValueError(
                f"x: expected images (B, {self.in_channels}, H, W) with H, W >= 4, received "
                f"shape {tuple(x.shape)}"
            )
        return self.head(self.features(x))
