"""Chunked (streaming) decoding of a model with a unidirectional encoder (``model.encoder: lstm``).

Features arrive in chunks; :meth:`Streamer.accept` returns the log-posteriors of every output
frame that the audio so far fixes, and :meth:`Streamer.finish` the rest. The result equals the
whole-utterance forward pass (tested), because each piece only runs where its input is complete:

- the front end (two convolutions, kernel 3, stride 2) is run again over the last few feature
  frames plus the new chunk, and only output frames whose 7 input frames (``4k-3 .. 4k+3``)
  have all arrived are kept;
- the LSTM carries its state from chunk to chunk (with ``model.stack`` s, a step waits for its
  s frames);
- with ``model.delay`` d, frame ``t`` is emitted once step ``t + d`` has run.

Latency, beyond the chunk itself: 30 ms of features past a 40-ms frame (the front end),
``(stack - 1) x 40`` ms waiting for a step's frames and ``delay x 40`` ms of look-ahead.

Example
-------
>>> import torch
>>> from asr_kd.models.acoustic import AcousticConfig, CTCAcousticModel
>>> torch.manual_seed(0) and None
>>> model = CTCAcousticModel(AcousticConfig(num_classes=5, n_mels=8, hidden=6, conv_channels=2,
...                                         encoder="lstm", delay=2)).eval()
>>> feats = torch.randn(90, 8)
>>> s = Streamer(model)
>>> pieces = [s.accept(feats[i : i + 20]) for i in range(0, 90, 20)] + [s.finish()]
>>> [len(p) for p in pieces], s.latency_ms(chunk_frames=20)
([3, 5, 5, 5, 2, 3], 310.0)
>>> whole, n = model(feats[None], torch.tensor([90]))
>>> torch.allclose(torch.cat(pieces), whole[0].log_softmax(-1), atol=1e-5)
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr_kd.models.acoustic import CTCAcousticModel

FRONT_LOOKAHEAD = 3  #: feature frames past 4k that output frame k of the front end reads


class Streamer:
    """Decode one utterance chunk by chunk with ``model`` (normalised features in; wrap the
    normalisation around it, as :func:`asr_kd.models.export` does, for raw features)."""

    def __init__(self, model: CTCAcousticModel, mean: Tensor | None = None, std: Tensor | None = None) -> None:
        if not getattr(model.encoder, "streams", False):
            raise ValueError(
                f"a {model.cfg.encoder!r} encoder reads the whole utterance; stream a model with encoder: lstm"
            )
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.mean = mean.to(self.device) if mean is not None else None
        self.std = std.to(self.device) if std is not None else None
        self.factor = model.subsample.factor
        self._feats = torch.zeros(0, model.cfg.n_mels, device=self.device)  # frames from global index _base on
        self._base = 0  # global index of self._feats[0]
        self._next = 0  # next front-end frame to compute
        self._pending: list[Tensor] = []  # front-end frames waiting for a full encoder step
        self._state: tuple[Tensor, Tensor] | None = None
        self._stepped = 0  # front-end frames the encoder has consumed (output frames + delay)
        self._emitted = 0

    def latency_ms(self, chunk_frames: int, hop_ms: float = 10.0) -> float:
        """The algorithmic latency: a chunk, the front end's look-ahead, a step's frames, the delay."""
        frame_ms = self.factor * hop_ms
        cfg = self.model.cfg
        return chunk_frames * hop_ms + FRONT_LOOKAHEAD * hop_ms + frame_ms * (cfg.stack - 1 + cfg.delay)

    @torch.no_grad()
    def accept(self, feats: Tensor) -> Tensor:
        """``(frames, n_mels)`` more features -> ``(new frames, classes)`` log-posteriors."""
        feats = feats.to(self.device).float()
        if self.mean is not None and self.std is not None:
            feats = (feats - self.mean) / self.std
        self._feats = torch.cat([self._feats, feats])
        arrived = self._base + len(self._feats)
        ready = max(0, (arrived - FRONT_LOOKAHEAD - 1) // self.factor + 1)  # frames whose input is complete
        return self._advance(ready, final=False)

    @torch.no_grad()
    def finish(self) -> Tensor:
        """The log-posteriors of the frames still held back (the utterance has ended)."""
        arrived = self._base + len(self._feats)
        return self._advance(-(-arrived // self.factor), final=True)

    def _advance(self, ready: int, final: bool) -> Tensor:
        if ready > self._next:
            start = max(0, self.factor * (self._next - 2))  # two frames of context: exact from local frame 2
            x = self._feats[start - self._base :]
            out, _ = self.model.subsample(x[None], torch.tensor([len(x)], device=self.device))
            local = self._next - start // self.factor
            self._pending += list(out[0, local : local + ready - self._next])
            self._next = ready
            keep = max(0, self.factor * (self._next - 2)) - self._base
            self._feats, self._base = self._feats[keep:], self._base + keep
        cfg = self.model.cfg
        if final:  # the whole-utterance pass pads delay frames, then up to a whole step
            total = self._stepped + len(self._pending) + cfg.delay
            zero = torch.zeros(self.model.subsample.out_dim, device=self.device)
            self._pending += [zero] * (cfg.delay + (-total) % cfg.stack)
        steps = len(self._pending) // cfg.stack
        logits: list[Tensor] = []
        if steps:
            x = torch.stack(self._pending[: steps * cfg.stack]).reshape(1, steps, -1)
            del self._pending[: steps * cfg.stack]
            enc, self._state = self.model.encoder.stream(x, self._state)
            logits = list(self.model.output(enc).reshape(-1, cfg.num_classes))
        first = max(0, cfg.delay - self._stepped)  # the first delay outputs belong to no frame
        self._stepped += steps * cfg.stack
        frames = logits[first:]
        if final:
            frames = frames[: max(0, self._next - self._emitted)]
        self._emitted += len(frames)
        if not frames:
            return torch.zeros(0, cfg.num_classes, device=self.device)
        return F.log_softmax(torch.stack(frames), dim=-1)


def stream_log_probs(model: nn.Module, feats: Tensor, chunk_frames: int) -> Tensor:
    """An utterance's ``(frames, n_mels)`` features decoded in chunks of ``chunk_frames``."""
    assert isinstance(model, CTCAcousticModel)
    s = Streamer(model)
    pieces = [s.accept(feats[i : i + chunk_frames]) for i in range(0, len(feats), chunk_frames)]
    return torch.cat([*pieces, s.finish()])
