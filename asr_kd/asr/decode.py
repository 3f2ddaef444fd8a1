"""CTC decoding: greedy best path, and beam search through torchaudio's ``ctc_decoder``.

Blank is class 0 throughout the project.

Example
-------
>>> import torch
>>> frames = torch.tensor([[0, 3, 3, 0, 3, 5, 5, 0]])           # argmax per frame
>>> log_probs = torch.nn.functional.one_hot(frames, 6).float().log()
>>> greedy_decode(log_probs, torch.tensor([8]))
[[3, 3, 5]]
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from asr_kd.asr.settings import BeamSettings

BLANK = 0


def collapse(path: Sequence[int], blank: int = BLANK) -> list[int]:
    """Merge repeated labels, then drop blanks: CTC's many-to-one map."""
    out: list[int] = []
    prev = None
    for label in path:
        if label != prev and label != blank:
            out.append(int(label))
        prev = label
    return out


def greedy_decode(log_probs: Tensor, lengths: Tensor, blank: int = BLANK) -> list[list[int]]:
    """Best-path decoding of ``(batch, frames, classes)`` scores with per-item lengths."""
    best = log_probs.argmax(-1).cpu()
    return [collapse(best[b, : int(n)].tolist(), blank) for b, n in enumerate(lengths.cpu())]


@contextlib.contextmanager
def _kenlm_quiet() -> Iterator[None]:
    """Hold back what KenLM prints to the process's stderr while it loads an ARPA file.

    KenLM (inside flashlight-text) writes "Reading <temporary path>" and a progress bar to file
    descriptor 2, which would put this machine's temporary paths into every evaluation log. The
    text is kept and written out after all if loading fails, so no error message is lost.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class BeamDecoder:
    """Beam search with torchaudio's flashlight-text decoder, lexicon-free or with a lexicon/LM.

    Args:
        tokens: token strings by class index; index 0 must be the blank.
        beam_size: hypotheses kept per frame.
        lexicon: optional lexicon file (word, then its tokens) restricting words
            (:func:`asr_kd.asr.lm.write_lexicon` writes one from transcripts).
        lm: optional KenLM binary / ARPA file (:func:`asr_kd.asr.lm.write_arpa`).
        lm_weight, word_score: LM weight and word insertion score (defaults: :class:`BeamSettings`).

    Returns token-index sequences (without blanks), like :func:`greedy_decode`.
    """

    def __init__(
        self,
        tokens: Sequence[str],
        beam_size: int = BeamSettings.size,
        lexicon: str | None = None,
        lm: str | None = None,
        lm_weight: float = BeamSettings.lm_weight,
        word_score: float = BeamSettings.word_score,
    ):
        from torchaudio.models.decoder import ctc_decoder

        tokens = list(tokens)
        # flashlight needs a silence token; a word-boundary-free inventory gets a spare one
        # appended, which no model output ever scores (its column is -inf).
        self.num_classes = len(tokens)
        sil = "|" if "|" in tokens else "<sil>"
        if sil not in tokens:
            tokens.append(sil)
        self._pad = len(tokens) - self.num_classes
        self._sil = tokens.index(sil)
        with _kenlm_quiet() if lm else contextlib.nullcontext():
            self.decoder = ctc_decoder(
                lexicon=lexicon,
                tokens=tokens,
                lm=lm,
                beam_size=beam_size,
                blank_token=tokens[BLANK],
                sil_token=sil,
                lm_weight=lm_weight,
                word_score=word_score,
                sil_score=0.0,
                log_add=True,
            )

    def _search(self, log_probs: Tensor, lengths: Tensor):
        emissions = log_probs.detach().float().cpu()
        if self._pad:
            pad = emissions.new_full((*emissions.shape[:2], self._pad), float("-inf"))
            emissions = torch.cat([emissions, pad], dim=-1)
        return self.decoder(emissions.contiguous(), lengths.cpu().to(torch.int32))

    def words(self, log_probs: Tensor, lengths: Tensor) -> list[str]:
        """The best hypotheses as text: the lexicon's words joined by spaces (with a lexicon)."""
        return [" ".join(r[0].words) for r in self._search(log_probs, lengths)]

    def __call__(self, log_probs: Tensor, lengths: Tensor) -> list[list[int]]:
        results = self._search(log_probs, lengths)
        # flashlight's tokens are already collapsed and blank-free (collapsing again would
        # merge real doubled letters); they may carry the silence token at the edges.
        out = []
        for r in results:
            ids = [t for t in r[0].tokens.tolist() if 0 < t < self.num_classes]
            while ids and ids[0] == self._sil:  # a real word boundary token at the edges
                ids.pop(0)
            while ids and ids[-1] == self._sil:
                ids.pop()
            out.append(ids)
        return out
