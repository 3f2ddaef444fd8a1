"""The subsampling front end of the acoustic models: convolutions from 10 ms to 40 ms frames.

Every teacher and student of a recipe has the same front end (kernel 3, stride 2, padding 1,
twice), so frame ``t`` of a teacher is frame ``t`` of a student: the cached posteriors of an
ensemble line up with any student's output. The subsampling factor is a property of the
front end (:attr:`ConvSubsampling.factor`), recorded in every fingerprint.

Example
-------
>>> import torch
>>> front = ConvSubsampling(n_mels=80, channels=8)
>>> front.factor, front.out_dim
(4, 160)
>>> x, n = front(torch.randn(2, 101, 80), torch.tensor([101, 60]))
>>> x.shape, n.tolist()
(torch.Size([2, 26, 160]), [26, 15])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

CONVS = 2  #: stride-2 convolutions of the front end: 40 ms frames from 10 ms features


def subsampled_lengths(lengths: Tensor, convs: int = 2) -> Tensor:
    """Frames after ``convs`` (kernel 3, stride 2, padding 1) convolutions: ceil(n / 2^convs)."""
    for _ in range(convs):
        lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
    return lengths


def frame_mask(lengths: Tensor, frames: int) -> Tensor:
    """``(batch, frames)`` True on each item's real frames."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


class ConvSubsampling(nn.Module):
    """``(batch, frames, n_mels)`` -> ``(batch, frames / 4, channels * n_mels / 4)`` and lengths.

    Args:
        n_mels: input feature dimension.
        channels: channels of each convolution.
        convs: stride-2 convolutions (the factor is ``2 ** convs``).
    """

    def __init__(self, n_mels: int, channels: int, convs: int = CONVS) -> None:
        super().__init__()
        layers = [
            nn.Sequential(nn.Conv2d(1 if i == 0 else channels, channels, kernel_size=3, stride=2, padding=1), nn.ReLU())
            for i in range(convs)
        ]
        self.convs = nn.ModuleList(layers)
        self.out_dim = channels * int(subsampled_lengths(torch.tensor(n_mels), convs))

    @property
    def factor(self) -> int:
        """Input frames per output frame."""
        return 2 ** len(self.convs)

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = feats.unsqueeze(1)  # (B, 1, T, F)
        n = lengths
        for conv in self.convs:
            # Zero what lies past each item's end, so padding never reaches its last frames.
            x = x * frame_mask(n.to(x.device), x.shape[2]).to(x.dtype)[:, None, :, None]
            x = conv(x)
            n = subsampled_lengths(n, convs=1)
        b, c, t, f = x.shape
        return x.permute(0, 2, 1, 3).reshape(b, t, c * f), n.clamp(max=t)
