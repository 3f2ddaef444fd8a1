"""The encoder registry: the part of an acoustic model between the front end and the output layer.

An encoder maps ``(batch, frames, in_dim)`` subsampled features and their lengths to
``(batch, frames, out_dim)``; it never changes the number of frames (the front end fixes
the frame rate). Each registered encoder has a config class that knows how to build it and
how to scale its widths (a half-size student is the teacher's config scaled). To add an
encoder, write the two classes and decorate the config with :func:`register`; a config then
selects it by name (``model.encoder``).

Example
-------
>>> import torch
>>> cfg = BLSTMConfig(hidden=16, layers=2)
>>> cfg.scaled(0.5).hidden
8
>>> enc = build_encoder("blstm", in_dim=10, hidden=16, layers=2, dropout=0.0)
>>> enc(torch.randn(3, 7, 10), torch.tensor([7, 5, 2])).shape, enc.out_dim
(torch.Size([3, 7, 32]), 32)
>>> sorted(ENCODERS)
['blstm']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

from torch import Tensor, nn


class EncoderConfig(Protocol):
    """What a registered encoder config provides."""

    def build(self, in_dim: int) -> nn.Module: ...

    def scaled(self, factor: float) -> EncoderConfig: ...


#: encoder name -> its config class
ENCODERS: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: register an encoder config class under ``name``."""

    def add(cls: type) -> type:
        ENCODERS[name] = cls
        return cls

    return add


def encoder_config(name: str, **settings: Any) -> EncoderConfig:
    """The config of encoder ``name`` from the settings it knows (others are ignored)."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; known: {sorted(ENCODERS)}")
    cls = ENCODERS[name]
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in settings.items() if k in known})


def build_encoder(name: str, in_dim: int, **settings: Any) -> nn.Module:
    """Encoder ``name`` on ``in_dim`` inputs."""
    return encoder_config(name, **settings).build(in_dim)


@register("blstm")
@dataclass(frozen=True)
class BLSTMConfig:
    """Bidirectional LSTM: ``hidden`` units per direction, ``layers`` layers, dropout between them."""

    hidden: int = 256
    layers: int = 2
    dropout: float = 0.1

    def build(self, in_dim: int) -> nn.Module:
        return BLSTMEncoder(in_dim, self.hidden, self.layers, self.dropout)

    def scaled(self, factor: float) -> BLSTMConfig:
        return replace(self, hidden=max(1, round(self.hidden * factor)))


class BLSTMEncoder(nn.LSTM):
    """A bidirectional LSTM over packed sequences (padded frames never reach a real one).

    It is an ``nn.LSTM`` itself, so its parameters keep the names ``weight_ih_l0`` ...
    """

    def __init__(self, in_dim: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__(
            in_dim,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.out_dim = 2 * hidden

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:  # (x, lengths): not nn.LSTM's signature
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        enc, _ = nn.LSTM.forward(self, packed)
        enc, _ = nn.utils.rnn.pad_packed_sequence(enc, batch_first=True, total_length=x.shape[1])
        return enc
