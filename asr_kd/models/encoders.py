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
>>> conv = build_encoder("conv", in_dim=10, hidden=16, layers=2, kernel=5, dropout=0.0)
>>> conv(torch.randn(3, 7, 10), torch.tensor([7, 5, 2])).shape, conv.out_dim
(torch.Size([3, 7, 16]), 16)
>>> uni = build_encoder("lstm", in_dim=10, hidden=16, layers=2, dropout=0.0)
>>> uni(torch.randn(3, 7, 10), torch.tensor([7, 5, 2])).shape, uni.out_dim
(torch.Size([3, 7, 16]), 16)
>>> sorted(ENCODERS)
['blstm', 'conv', 'lstm']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

import torch
import torch.nn.functional as F
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
    """Bidirectional LSTM: ``hidden`` units per direction, ``layers`` layers, dropout between them.

    ``packed`` runs it on packed sequences (``nn.LSTM``); ``False`` on padded batches with each
    item reversed within its own length for the backward direction (:class:`PaddedBLSTMEncoder`):
    the same function on every real frame, faster on a CPU.
    """

    hidden: int = 256
    layers: int = 2
    dropout: float = 0.1
    packed: bool = True

    def build(self, in_dim: int) -> nn.Module:
        if not self.packed:
            return PaddedBLSTMEncoder(in_dim, self.hidden, self.layers, self.dropout)
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


def reverse_within(x: Tensor, lengths: Tensor) -> Tensor:
    """Each item of ``(batch, frames, dim)`` reversed along its first ``lengths[b]`` frames; the
    padding stays where it is (applying it twice gives ``x`` back).

    >>> reverse_within(torch.arange(8.).view(2, 4, 1), torch.tensor([4, 2]))[..., 0].tolist()
    [[3.0, 2.0, 1.0, 0.0], [5.0, 4.0, 6.0, 7.0]]
    """
    t = torch.arange(x.shape[1], device=x.device)[None, :]
    n = lengths.to(x.device)[:, None]
    index = torch.where(t < n, n - 1 - t, t)
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[2]))


class PaddedBLSTMEncoder(nn.Module):
    """A bidirectional LSTM on padded batches, exact on every real frame.

    Padding trails every item, so the forward direction never carries it into a real frame; the
    backward direction reads each item reversed within its own length (:func:`reverse_within`),
    so its padding trails too. Weights load from, and are stored as, ``nn.LSTM``'s bidirectional
    names (``weight_ih_l0``, ``weight_ih_l0_reverse``, ...), so a model trained packed runs padded
    and back.
    """

    def __init__(self, in_dim: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        dims = [in_dim] + [2 * hidden] * (layers - 1)
        self.fwd = nn.ModuleList(nn.LSTM(d, hidden, batch_first=True) for d in dims)
        self.bwd = nn.ModuleList(nn.LSTM(d, hidden, batch_first=True) for d in dims)
        self.drop = nn.Dropout(dropout if layers > 1 else 0.0)
        self.out_dim = 2 * hidden
        self._register_load_state_dict_pre_hook(self._from_lstm_names)
        self._register_state_dict_hook(PaddedBLSTMEncoder._to_lstm_names)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        for k, (fwd, bwd) in enumerate(zip(self.fwd, self.bwd, strict=True)):
            if k:
                x = self.drop(x)
            ahead, _ = fwd(x)
            back, _ = bwd(reverse_within(x, lengths))
            x = torch.cat([ahead, reverse_within(back, lengths)], dim=-1)
        return x

    @staticmethod
    def _to_lstm_names(module: nn.Module, state: dict, prefix: str, *args: Any) -> None:
        for key in [k for k in state if k.startswith((prefix + "fwd.", prefix + "bwd."))]:
            direction, layer, name = key[len(prefix) :].split(".", 2)  # e.g. bwd.1.weight_ih_l0
            stem = name.rsplit("_l", 1)[0]
            state[f"{prefix}{stem}_l{layer}" + ("_reverse" if direction == "bwd" else "")] = state.pop(key)

    def _from_lstm_names(self, state: dict, prefix: str, *args: Any) -> None:
        for key in [k for k in state if k.startswith(prefix) and k[len(prefix) :].startswith(("weight_", "bias_"))]:
            name = key[len(prefix) :]
            reverse = name.endswith("_reverse")
            base = name[: -len("_reverse")] if reverse else name
            stem, layer = base.rsplit("_l", 1)
            state[f"{prefix}{'bwd' if reverse else 'fwd'}.{layer}.{stem}_l0"] = state.pop(key)


@register("lstm")
@dataclass(frozen=True)
class LSTMConfig:
    """Unidirectional LSTM, ``hidden`` units, ``layers`` layers: a streaming encoder (each frame
    sees only the past; ``model.delay`` lets the output look a few frames ahead)."""

    hidden: int = 256
    layers: int = 2
    dropout: float = 0.1

    def build(self, in_dim: int) -> nn.Module:
        return LSTMEncoder(in_dim, self.hidden, self.layers, self.dropout)

    def scaled(self, factor: float) -> LSTMConfig:
        return replace(self, hidden=max(1, round(self.hidden * factor)))


class LSTMEncoder(nn.LSTM):
    """A unidirectional LSTM on padded batches (exact: padding trails, the past never sees it);
    :meth:`stream` carries its state from one chunk to the next."""

    def __init__(self, in_dim: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__(in_dim, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.out_dim = hidden
        self.streams = True

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return nn.LSTM.forward(self, x)[0]

    def stream(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``(batch, steps, in_dim)`` and the state after the previous chunk -> outputs, new state."""
        out, new_state = nn.LSTM.forward(self, x, state)
        return out, new_state


@register("conv")
@dataclass(frozen=True)
class ConvConfig:
    """A stack of depthwise-separable 1-D convolutions (as in QuartzNet / ContextNet blocks).

    ``hidden`` channels, ``layers`` residual blocks, each a depthwise convolution over
    ``kernel`` frames (``kernel * layers`` frames of context, both sides) and a pointwise
    layer. No recurrence: every frame is computed at once, so on a CPU it decodes faster than
    a BiLSTM of the same parameter count, whose per-step overhead dominates at small widths.
    """

    hidden: int = 256
    layers: int = 5
    kernel: int = 15
    dropout: float = 0.1

    def build(self, in_dim: int) -> nn.Module:
        return ConvEncoder(in_dim, self.hidden, self.layers, self.kernel, self.dropout)

    def scaled(self, factor: float) -> ConvConfig:
        return replace(self, hidden=max(1, round(self.hidden * factor)))


class SeparableBlock(nn.Module):
    """``x + dropout(GELU(pointwise(depthwise(mask(LayerNorm(x))))))`` on ``(batch, frames, dim)``.

    Padded frames are zeroed before the depthwise convolution, so they add nothing to a real
    frame: an item's output is the same alone or in a padded batch. The depthwise convolution
    runs as a 2-D convolution with a ``(kernel, 1)`` filter, which is 2-3x faster than
    ``conv1d`` with ``groups=dim`` on the CPUs measured (tools/bench_decode.py).
    """

    def __init__(self, dim: int, kernel: int, dropout: float) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"kernel must be odd (centred on its frame), got {kernel}")
        self.norm = nn.LayerNorm(dim)
        self.depthwise = nn.Parameter(torch.randn(dim, 1, kernel, 1) / kernel**0.5)
        self.depthwise_bias = nn.Parameter(torch.zeros(dim))
        self.pointwise = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.norm(x) * mask  # (B, T, C); padded frames zero
        pad = self.depthwise.shape[2] // 2
        h = F.conv2d(
            h.transpose(1, 2).unsqueeze(-1), self.depthwise, self.depthwise_bias, padding=(pad, 0), groups=h.shape[2]
        )
        h = h.squeeze(-1).transpose(1, 2)
        return x + self.drop(F.gelu(self.pointwise(h)))


class ConvEncoder(nn.Module):
    """Linear projection to ``hidden`` -> ``layers`` :class:`SeparableBlock` s -> LayerNorm."""

    def __init__(self, in_dim: int, hidden: int, layers: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.project = nn.Linear(in_dim, hidden)
        self.blocks = nn.ModuleList(SeparableBlock(hidden, kernel, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.out_dim = hidden

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None])[..., None]
        x = self.project(x)
        for block in self.blocks:
            x = block(x, mask.to(x.dtype))
        return self.norm(x)
