"""CTC acoustic models: subsampling front end + encoder (from the registry) + output layer.

One family for teachers and students: a student is a teacher's config scaled in width
(:meth:`AcousticConfig.scaled`). Every model of a recipe shares the front end
(:mod:`asr_kd.models.frontend`), so frame ``t`` of a teacher is frame ``t`` of a student;
the encoder is chosen by name (:mod:`asr_kd.models.encoders`, ``blstm`` first).

Example
-------
>>> import torch
>>> teacher_cfg = AcousticConfig(num_classes=30, hidden=64, conv_channels=16)
>>> student_cfg = teacher_cfg.scaled(0.5)
>>> student_cfg.hidden, student_cfg.conv_channels, student_cfg.encoder
(32, 8, 'blstm')
>>> model = CTCAcousticModel(student_cfg)
>>> logits, lengths = model(torch.randn(2, 101, 80), torch.tensor([101, 60]))
>>> logits.shape, lengths.tolist(), model.subsampling
(torch.Size([2, 26, 30]), [26, 15], 4)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr_kd.models.encoders import encoder_config
from asr_kd.models.frontend import CONVS, ConvSubsampling, frame_mask, subsampled_lengths

__all__ = ["AcousticConfig", "CTCAcousticModel", "count_parameters", "parameter_count", "subsampled_lengths"]


@dataclass(frozen=True)
class AcousticConfig:
    """Architecture of a CTC acoustic model.

    Args:
        num_classes: output classes, blank (index 0) included.
        n_mels: input feature dimension.
        conv_channels: channels of the two subsampling convolutions.
        hidden, layers, dropout: the encoder's widths and depth (as its config reads them;
            dropout also before the output layer).
        encoder: a name of :data:`asr_kd.models.encoders.ENCODERS`.
        packed: the BiLSTM on packed sequences (``False``: on padded batches; the same
            function of the same weights, faster on a CPU).
        kernel: frames per depthwise convolution of the ``conv`` encoder (odd).
        stack: front-end frames per encoder step (1: one each). With 2, pairs of adjacent
            frames are concatenated, the encoder runs on half as many steps and the output
            layer predicts both frames of a pair (low frame rate inside, the recipe's frame rate
            outside: the same CTC targets and the same frame-level teacher posteriors).
        delay: output frames the model reads ahead: the log-posteriors of frame ``t`` come from
            the encoder's step at ``t + delay`` (0: none). With a unidirectional encoder
            (``lstm``) this is the student's delayed targets of Kurata & Audhkhasi (2018): a
            streaming model sees ``delay`` frames of the future before it commits to a frame.
    """

    num_classes: int
    n_mels: int = 80
    conv_channels: int = 32
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.1
    encoder: str = "blstm"
    packed: bool = True
    kernel: int = 15
    stack: int = 1
    delay: int = 0

    @property
    def subsampling(self) -> int:
        """Feature frames per output frame (the front end's factor)."""
        return 2**CONVS

    def encoder_settings(self) -> Any:
        return encoder_config(
            self.encoder,
            hidden=self.hidden,
            layers=self.layers,
            dropout=self.dropout,
            packed=self.packed,
            kernel=self.kernel,
        )

    def scaled(self, factor: float) -> AcousticConfig:
        """The same architecture with every hidden width times ``factor``."""
        enc = asdict(self.encoder_settings().scaled(factor))
        return replace(
            self,
            conv_channels=max(1, round(self.conv_channels * factor)),
            **{k: v for k, v in enc.items() if k in {f.name for f in fields(self)}},
        )

    def fitted(self, budget: int) -> AcousticConfig:
        """This config :meth:`scaled` to the widest that has at most ``budget`` parameters (up to 4x).

        >>> t = AcousticConfig(num_classes=29, hidden=128, conv_channels=16)
        >>> s = t.fitted(parameter_count(t) // 2)
        >>> s.hidden, s.conv_channels, round(parameter_count(s) / parameter_count(t), 3)
        (90, 11, 0.493)
        >>> shallow = AcousticConfig(num_classes=29, hidden=128, conv_channels=16, layers=1)
        >>> shallow.fitted(parameter_count(t) // 2).hidden
        124
        """
        lo, hi = 0.0, 4.0  # scaled(lo) fits (or lo is 0), scaled(hi) does not (or hi is the cap)
        if parameter_count(self.scaled(hi)) <= budget:
            return self.scaled(hi)
        for _ in range(30):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if parameter_count(self.scaled(mid)) <= budget else (lo, mid)
        return self.scaled(max(lo, 1 / max(1, self.hidden)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AcousticConfig:
        """A stored config; one saved before encoders had names is a ``blstm``."""
        return cls(**d)


class CTCAcousticModel(nn.Module):
    """Conv subsampling (x4) -> encoder -> linear over blank + tokens."""

    def __init__(self, cfg: AcousticConfig):
        super().__init__()
        self.cfg = cfg
        self.subsample = ConvSubsampling(cfg.n_mels, cfg.conv_channels)
        if cfg.stack < 1 or cfg.delay < 0:
            raise ValueError(f"stack must be >= 1 and delay >= 0 frames, got {cfg.stack} and {cfg.delay}")
        self.encoder = cfg.encoder_settings().build(self.subsample.out_dim * cfg.stack)
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(self.encoder.out_dim, cfg.num_classes * cfg.stack)
        self._register_load_state_dict_pre_hook(_rename_legacy_keys)

    @property
    def subsampling(self) -> int:
        """Feature frames per output frame."""
        return int(self.subsample.factor)

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``feats`` (batch, frames, n_mels), ``lengths`` (batch,) in frames ->
        logits (batch, frames / 4, classes) and output lengths."""
        x, out_lengths = self.subsample(feats, lengths)
        s, ahead = self.cfg.stack, self.cfg.delay
        if s == 1 and ahead == 0:
            return self.output(self.dropout(self.encoder(x, out_lengths))), out_lengths
        b, t, d = x.shape
        x = x * frame_mask(out_lengths.to(x.device), t).to(x.dtype)[..., None]  # padding alone or batched: 0
        x = F.pad(x, (0, 0, 0, ahead + (-(t + ahead)) % s)).reshape(b, -1, s * d)
        steps = torch.div(out_lengths + ahead + s - 1, s, rounding_mode="floor")
        logits = self.output(self.dropout(self.encoder(x, steps)))
        return logits.reshape(b, -1, self.cfg.num_classes)[:, ahead : ahead + t], out_lengths


def _rename_legacy_keys(state: dict, prefix: str, *args: Any) -> None:
    """Weights saved before the front end was its own module (``subsample.0.0.weight``) load too."""
    for key in [
        k for k in state if k.startswith(prefix + "subsample.") and not k.startswith(prefix + "subsample.convs.")
    ]:
        state[prefix + "subsample.convs." + key[len(prefix + "subsample.") :]] = state.pop(key)


def parameter_count(cfg: AcousticConfig) -> int:
    """Trainable parameters of the model ``cfg`` describes."""
    return count_parameters(CTCAcousticModel(cfg))


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
