"""A word lexicon and an n-gram language model (ARPA) from training transcripts, for beam search.

torchaudio's ``ctc_decoder`` (flashlight-text) reads a lexicon file (a word, then the tokens
that spell it) and a KenLM model, binary or ARPA text. KenLM's Python package only queries
models; estimating one needs its C++ ``lmplz`` (Boost, cmake). So the ARPA file is written
here: interpolated absolute discounting (Ney's discount per order), stored in backoff form,
where a history's backoff weight is exactly its interpolation weight.

Example
-------
>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> path = os.path.join(d, "lm.arpa")
>>> write_arpa(["THE CAT SAT", "THE DOG SAT"], path, order=2)
>>> text = open(path).read()
>>> "ngram 1=7" in text and "ngram 2=6" in text    # 4 words, <s>, </s>, <unk>; 6 seen bigrams
True
>>> round(ngram_prob(read_arpa(path), ["<s>"], "THE"), 3)  # every sentence starts with THE
0.811
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from asr_kd.io import write_atomic

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
SIL = "|"  #: the word-boundary token of character models in the decoder's token list


def decoder_tokens(tokenizer) -> list[str]:
    """Token strings by class index for ``ctc_decoder`` (index 0: the blank).

    Character models: the space character becomes ``|``, the decoder's word boundary.
    Sentencepiece models: the pieces themselves (``▁`` starts a word).
    """
    if hasattr(tokenizer, "chars"):
        return ["<blank>"] + [SIL if c == " " else c for c in tokenizer.chars]
    sp = tokenizer.sp
    return ["<blank>"] + [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def spell(word: str, tokenizer) -> list[str] | None:
    """The decoder tokens of ``word`` (a character word ends in ``|``); None if it cannot be spelt."""
    if hasattr(tokenizer, "chars"):
        if tokenizer.unknown_chars(word):
            return None
        return list(word) + [SIL]
    ids = tokenizer.sp.encode(word)
    if not ids or any(tokenizer.sp.is_unknown(i) for i in ids):
        return None
    return [tokenizer.sp.id_to_piece(i) for i in ids]


def write_lexicon(texts: Iterable[str], tokenizer, path: str | os.PathLike) -> int:
    """Write every word of ``texts`` with its spelling; returns the number of words."""
    words = sorted({w for t in texts for w in t.split()})
    lines = []
    for w in words:
        tokens = spell(w, tokenizer)
        if tokens is not None:
            lines.append(f"{w}\t{' '.join(tokens)}")
    write_atomic(path, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8"))
    return len(lines)


def _discount(counts: Mapping[tuple[str, ...], int]) -> float:
    """Ney's estimate D = n1 / (n1 + 2 n2), kept inside [0.1, 0.9]."""
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    d = n1 / (n1 + 2 * n2) if n1 + n2 else 0.5
    return min(max(d, 0.1), 0.9)


def write_arpa(texts: Iterable[str], path: str | os.PathLike, order: int = 3) -> None:
    """Estimate an ``order``-gram model of the word sequences in ``texts``; write it as ARPA.

    p(w | h) = max(c(h w) - D, 0) / c(h .) + D N1+(h .) / c(h .) * p(w | h'), down to a
    unigram interpolated with the uniform distribution over the words and ``<unk>``.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    counts: list[Counter] = [Counter() for _ in range(order + 1)]  # counts[n][(w1..wn)]
    for text in texts:
        words = [BOS, *text.split(), EOS]
        for n in range(1, order + 1):
            for i in range(1 if n == 1 else 0, len(words) - n + 1):
                counts[n][tuple(words[i : i + n])] += 1
    if not any(g != (EOS,) for g in counts[1]):
        raise ValueError("no words to estimate a language model from")
    vocab = sorted({g[0] for g in counts[1]})
    prob: list[dict[tuple[str, ...], float]] = [{} for _ in range(order + 1)]
    bow: list[dict[tuple[str, ...], float]] = [{} for _ in range(order + 1)]
    total, d = sum(counts[1].values()), _discount(counts[1])
    uniform = d * len(vocab) / total / (len(vocab) + 1)
    for g, c in counts[1].items():
        prob[1][g] = (c - d) / total + uniform
    prob[1][(UNK,)] = uniform
    for n in range(2, order + 1):
        d = _discount(counts[n])
        context: Counter[tuple[str, ...]] = Counter()
        types: Counter[tuple[str, ...]] = Counter()
        for g, c in counts[n].items():
            context[g[:-1]] += c
            types[g[:-1]] += 1
        for h in context:
            bow[n - 1][h] = d * types[h] / context[h]
        for g, c in counts[n].items():
            h = g[:-1]
            prob[n][g] = (c - d) / context[h] + bow[n - 1][h] * prob[n - 1][g[1:]]

    def line(n: int, g: tuple[str, ...]) -> str:
        p = -99.0 if g == (BOS,) else math.log10(prob[n][g])
        out = f"{p:.6f}\t{' '.join(g)}"
        if g in bow[n]:
            out += f"\t{math.log10(bow[n][g]):.6f}"
        return out

    prob[1][(BOS,)] = 0.0  # <s> is never predicted; ARPA lists it with -99
    lines = ["\\data\\"] + [f"ngram {n}={len(prob[n])}" for n in range(1, order + 1)] + [""]
    for n in range(1, order + 1):
        lines.append(f"\\{n}-grams:")
        lines += [line(n, g) for g in sorted(prob[n])]
        lines.append("")
    lines.append("\\end\\")
    write_atomic(path, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8"))


def read_arpa(path: str | os.PathLike) -> dict[tuple[str, ...], tuple[float, float]]:
    """``{n-gram: (log10 prob, log10 backoff)}`` of an ARPA file (to check one; not for decoding)."""
    out: dict[tuple[str, ...], tuple[float, float]] = {}
    section = 0
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        if raw.startswith("\\") and raw.endswith("-grams:"):
            section = int(raw[1:].split("-")[0])
            continue
        parts = raw.split("\t")
        if section and len(parts) >= 2:
            out[tuple(parts[1].split())] = (float(parts[0]), float(parts[2]) if len(parts) > 2 else 0.0)
    return out


def ngram_prob(model: Mapping[tuple[str, ...], tuple[float, float]], history: Sequence[str], word: str) -> float:
    """p(word | history) by the ARPA backoff rule."""
    h = tuple(history)
    backoff = 0.0
    while True:
        if h + (word,) in model:
            return 10 ** (model[h + (word,)][0] + backoff)
        if not h:
            return 10 ** (model[(UNK,)][0] + backoff)
        backoff += model.get(h, (0.0, 0.0))[1]
        h = h[1:]
