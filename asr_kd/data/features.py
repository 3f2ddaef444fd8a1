"""The shared front end: 80-dim log-Mel filterbanks, global mean/variance normalisation, SpecAugment.

Teachers and students use one :class:`FrontEnd` (waveforms in) or one :class:`FeatureNorm`
(stored features in; the front end normalises and masks through it too). The number of
frames depends only on the number of samples (:func:`num_frames`), never on augmentation,
so frame ``t`` of a teacher's view is frame ``t`` of a student's. SpecAugment masks values (time and frequency
bands, set to 0 = the normalised mean) and never warps or drops frames.

Example
-------
>>> import torch
>>> from asr_kd.data.features import FeatureConfig, FrontEnd, num_frames
>>> fe = FrontEnd(FeatureConfig())
>>> wavs = torch.randn(2, 16000); lengths = torch.tensor([16000, 12000])
>>> feats, frames = fe(wavs, lengths)
>>> feats.shape, frames.tolist(), num_frames(12000)
(torch.Size([2, 101, 80]), [101, 76], 76)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..io import write_text


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that fixes the features (part of the experiment fingerprint)."""

    sample_rate: int = 16000
    n_mels: int = 80
    n_fft: int = 400
    win_ms: float = 25.0
    hop_ms: float = 10.0

    @property
    def hop(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    def fingerprint(self) -> dict:
        return {"features": "fbank", **asdict(self)}


@dataclass(frozen=True)
class SpecAugmentConfig:
    """SpecAugment masking (Park et al. 2019) without time warping.

    Each utterance gets ``freq_masks`` bands of up to ``freq_width`` mel channels and
    ``time_masks`` spans of up to ``time_width`` frames set to 0 (the normalised mean).
    """

    freq_masks: int = 2
    freq_width: int = 15
    time_masks: int = 2
    time_width: int = 25
    max_time_ratio: float = 0.2  #: one time mask covers at most this share of the utterance


def num_frames(num_samples: int, config: FeatureConfig = FeatureConfig()) -> int:
    """Frames the front end makes from ``num_samples`` samples (centred STFT: ``n // hop + 1``)."""
    return int(num_samples) // config.hop + 1


class Fbank(nn.Module):
    """Log-Mel filterbanks (SpeechBrain's ``Fbank``), batch ``(B, T)`` -> ``(B, frames, n_mels)``."""

    def __init__(self, config: FeatureConfig = FeatureConfig()) -> None:
        super().__init__()
        from speechbrain.lobes.features import Fbank as SBFbank

        self.config = config
        self.fbank = SBFbank(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            n_mels=config.n_mels,
            win_length=config.win_ms,
            hop_length=config.hop_ms,
        )

    @torch.no_grad()
    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        return self.fbank(wavs)


class GlobalCMVN(nn.Module):
    """Per-dimension mean and variance from the train set; padded frames never count.

    Example
    -------
    >>> cmvn = GlobalCMVN(3)
    >>> cmvn.accumulate(torch.tensor([[[1., 2., 3.], [3., 4., 5.], [9., 9., 9.]]]), torch.tensor([2]))
    >>> cmvn.finalize(); cmvn.mean.tolist()
    [2.0, 3.0, 4.0]
    """

    mean: torch.Tensor  #: buffers (saved with the module)
    std: torch.Tensor

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self._sum = torch.zeros(dim, dtype=torch.float64)
        self._sq = torch.zeros(dim, dtype=torch.float64)
        self._n = 0

    def accumulate(self, feats: torch.Tensor, frames: torch.Tensor) -> None:
        """Add a batch ``(B, F, D)`` whose first ``frames[b]`` frames are real."""
        mask = torch.arange(feats.shape[1])[None, :] < frames[:, None]
        x = feats[mask].double()
        self._sum += x.sum(0)
        self._sq += (x * x).sum(0)
        self._n += x.shape[0]

    def finalize(self) -> None:
        if self._n == 0:
            raise ValueError("GlobalCMVN: no frames accumulated")
        mean = self._sum / self._n
        var = (self._sq / self._n - mean * mean).clamp_min(0)
        self.mean.copy_(mean.float())
        self.std.copy_(var.sqrt().float().clamp_min(self.eps))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.mean) / self.std

    def save(self, path: str | os.PathLike) -> None:
        write_text(path, json.dumps({"mean": self.mean.tolist(), "std": self.std.tolist(), "frames": self._n}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> GlobalCMVN:
        data = json.loads(Path(path).read_text())
        c = cls(len(data["mean"]))
        c.mean.copy_(torch.tensor(data["mean"]))
        c.std.copy_(torch.tensor(data["std"]))
        c._n = data.get("frames", 0)
        return c


def spec_augment(
    feats: torch.Tensor,
    frames: torch.Tensor,
    config: SpecAugmentConfig = SpecAugmentConfig(),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mask random frequency bands and time spans of ``(B, F, D)`` features (a copy); shape unchanged."""
    out = feats.clone()
    B, _, D = out.shape
    for b in range(B):
        n = int(frames[b])
        for _ in range(config.freq_masks):
            w = int(torch.randint(0, config.freq_width + 1, (1,), generator=generator))
            f0 = int(torch.randint(0, max(1, D - w + 1), (1,), generator=generator))
            out[b, :n, f0 : f0 + w] = 0.0
        max_w = min(config.time_width, int(config.max_time_ratio * n))
        for _ in range(config.time_masks):
            w = int(torch.randint(0, max_w + 1, (1,), generator=generator))
            t0 = int(torch.randint(0, max(1, n - w + 1), (1,), generator=generator))
            out[b, t0 : t0 + w, :] = 0.0
    return out


def cmvn_from_features(feats: Mapping[str, torch.Tensor]) -> GlobalCMVN:
    """Global per-dimension mean and variance over every frame of the (train) features.

    ``feats`` maps utterance IDs to ``(frames, n_mels)`` features, as stored by the recipe;
    this is the one way CMVN is computed.

    >>> cmvn = cmvn_from_features({"a": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([[5.0, 6.0]])})
    >>> cmvn.mean.tolist(), cmvn._n
    ([3.0, 4.0], 3)
    """
    values = list(feats.values())
    cmvn = GlobalCMVN(values[0].shape[1])
    for start in range(0, len(values), 256):
        chunk = [v.float() for v in values[start : start + 256]]
        lengths = torch.tensor([len(v) for v in chunk])
        cmvn.accumulate(nn.utils.rnn.pad_sequence(chunk, batch_first=True), lengths)
    cmvn.finalize()
    return cmvn


class FeatureNorm(nn.Module):
    """``(feats, lengths, augment) -> feats``: train-set normalisation, then SpecAugment when asked.

    Padded frames are set to 0 after normalisation; the frame count never changes. The one
    normalise-and-mask step of the project: :class:`FrontEnd` uses it on waveforms, the
    recipes on stored features.

    Args:
        cmvn: global normalisation (:func:`cmvn_from_features`); ``None`` leaves the values as they are.
        augment: SpecAugment settings applied when ``forward(..., augment=True)``; ``None`` turns it off.

    >>> norm = FeatureNorm(GlobalCMVN(2), augment=None)
    >>> norm(torch.ones(1, 3, 2), torch.tensor([2])).tolist()
    [[[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]]
    """

    def __init__(self, cmvn: GlobalCMVN | None, augment: SpecAugmentConfig | None = SpecAugmentConfig()) -> None:
        super().__init__()
        self.cmvn = cmvn
        self.augment = augment

    def forward(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor,
        augment: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        feats = feats.float()
        if self.cmvn is not None:
            feats = self.cmvn(feats)
        mask = torch.arange(feats.shape[1], device=feats.device)[None, :] < lengths.to(feats.device)[:, None]
        feats = feats * mask[..., None]
        if augment and self.augment is not None:
            feats = spec_augment(feats, lengths.cpu(), self.augment, generator)
        return feats


class FrontEnd(nn.Module):
    """Waveforms ``(B, T)`` with lengths in samples -> normalised features and frame counts.

    Args:
        config: the features.
        cmvn: global normalisation (from :func:`cmvn_from_features`); ``None`` leaves features as they are.
        augment: SpecAugment settings used in training mode; ``None`` turns it off.
    """

    def __init__(
        self,
        config: FeatureConfig = FeatureConfig(),
        cmvn: GlobalCMVN | None = None,
        augment: SpecAugmentConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.fbank = Fbank(config)
        self.norm = FeatureNorm(cmvn, augment)

    def frames(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths, self.config.hop, rounding_mode="floor") + 1

    def forward(
        self, wavs: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self.frames(lengths)
        return self.norm(self.fbank(wavs), frames, augment=self.training, generator=generator), frames
