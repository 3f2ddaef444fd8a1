"""CTC acoustic models: one family for teachers and students, scaled by width.

Two stride-2 convolutions subsample 10 ms feature frames to 40 ms, a
bidirectional LSTM encodes them, and a linear layer scores blank + tokens per
frame. A student is the same model with every hidden width halved
(:meth:`AcousticConfig.scaled`), the paper's "about half the neurons"; it sees
the same frames, so frame ``t`` of a teacher is frame ``t`` of the student.

Example
-------
>>> import torch
>>> teacher_cfg = AcousticConfig(num_classes=30, hidden=64, conv_channels=16)
>>> student_cfg = teacher_cfg.scaled(0.5)
>>> student_cfg.hidden, student_cfg.conv_channels
(32, 8)
>>> model = CTCAcousticModel(student_cfg)
>>> logits, lengths = model(torch.randn(2, 101, 80), torch.tensor([101, 60]))
>>> logits.shape, lengths.tolist()
(torch.Size([2, 26, 30]), [26, 15])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class AcousticConfig:
    """Architecture of a CTC acoustic model.

    Args:
        num_classes: output classes, blank (index 0) included.
        n_mels: input feature dimension.
        conv_channels: channels of the two subsampling convolutions.
        hidden: LSTM units per direction.
        layers: LSTM layers.
        dropout: dropout between LSTM layers and before the output layer.
    """

    num_classes: int
    n_mels: int = 80
    conv_channels: int = 32
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.1

    def scaled(self, factor: float) -> "AcousticConfig":
        """The same architecture with every hidden width times ``factor``."""
        return replace(
            self,
            conv_channels=max(1, round(self.conv_channels * factor)),
            hidden=max(1, round(self.hidden * factor)),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def subsampled_lengths(lengths: Tensor, convs: int = 2) -> Tensor:
    """Frames after ``convs`` (kernel 3, stride 2, padding 1) convolutions: ceil(n / 2^convs)."""
    for _ in range(convs):
        lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
    return lengths


class CTCAcousticModel(nn.Module):
    """Conv subsampling (x4) -> BiLSTM -> linear over blank + tokens."""

    def __init__(self, cfg: AcousticConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.conv_channels
        self.subsample = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(1, c, kernel_size=3, stride=2, padding=1), nn.ReLU()),
                nn.Sequential(nn.Conv2d(c, c, kernel_size=3, stride=2, padding=1), nn.ReLU()),
            ]
        )
        freq = subsampled_lengths(torch.tensor(cfg.n_mels)).item()
        self.encoder = nn.LSTM(
            c * freq,
            cfg.hidden,
            num_layers=cfg.layers,
            batch_first=True,
            bidirectional=True,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(2 * cfg.hidden, cfg.num_classes)

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``feats`` (batch, frames, n_mels), ``lengths`` (batch,) in frames ->
        logits (batch, frames / 4, classes) and output lengths."""
        x = feats.unsqueeze(1)  # (B, 1, T, F)
        n = lengths
        for conv in self.subsample:
            # Zero what lies past each item's end, so padding never reaches its last frames.
            x = x * _frame_mask(n.to(x.device), x.shape[2]).to(x.dtype)[:, None, :, None]
            x = conv(x)
            n = subsampled_lengths(n, convs=1)
        b, c, t, f = x.shape
        x = x.permute(0, 2, 1, 3).reshape(b, t, c * f)
        out_lengths = n.clamp(max=t)
        packed = nn.utils.rnn.pack_padded_sequence(
            x, out_lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        enc, _ = self.encoder(packed)
        enc, _ = nn.utils.rnn.pad_packed_sequence(enc, batch_first=True, total_length=t)
        return self.output(self.dropout(enc)), out_lengths


def _frame_mask(lengths: Tensor, frames: int) -> Tensor:
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
