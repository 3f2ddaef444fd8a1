"""Tokenizers for CTC: sentencepiece (unigram or BPE) or characters; id 0 is always the blank.

A tokenizer is trained on the *train* transcripts only and saved inside the experiment
folder, so every model of an experiment (teachers and students) shares it.

Example
-------
>>> import tempfile
>>> from asr_kd.data.tokenizer import train_tokenizer, load_tokenizer
>>> texts = ["HELLO WORLD", "HELLO THERE", "THE WORLD IS WIDE"] * 20
>>> tok = train_tokenizer(texts, tempfile.mkdtemp(), kind="char")
>>> tok.decode(tok.encode("HELLO"))
'HELLO'
>>> tok.blank, sorted(tok.unknown_chars("HELLO 42"))
(0, ['2', '4'])
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from ..errors import UserError
from ..io import write_atomic, write_json, write_text
from .manifest import load_manifest
from .validate import DEFAULT_CHARSET

BLANK = "<blank>"


class TokenizerError(UserError, ValueError):
    """A tokenizer file is missing or does not match what was asked."""


class Tokenizer(Protocol):
    """What the rest of the project uses."""

    blank: int
    vocab_size: int  #: including the blank

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def unknown_chars(self, text: str) -> set[str]: ...


class CharTokenizer:
    """One token per character (space included); id 0 is the CTC blank."""

    blank = 0

    def __init__(self, chars: Sequence[str]) -> None:
        self.chars = list(chars)
        self.index = {c: i + 1 for i, c in enumerate(self.chars)}
        self.vocab_size = len(self.chars) + 1
        self.path: Path | None = None

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        """Every character of the texts plus the normaliser's English alphabet (A-Z, ', space),
        so a letter that happens to be missing from the train text still encodes elsewhere."""
        return cls(sorted({c for t in texts for c in t} | DEFAULT_CHARSET))

    def encode(self, text: str) -> list[int]:
        bad = self.unknown_chars(text)
        if bad:
            raise TokenizerError(f"characters not in the tokenizer: {sorted(bad)} in {text[:60]!r}")
        return [self.index[c] for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i - 1] for i in ids if 0 < i <= len(self.chars))

    def unknown_chars(self, text: str) -> set[str]:
        return {c for c in text if c not in self.index}

    def save(self, path: str | os.PathLike) -> None:
        write_text(path, json.dumps({"type": "char", "chars": self.chars}, ensure_ascii=False))
        self.path = Path(path)


class SentencePieceTokenizer:
    """A sentencepiece model; token ids are shifted by one so that 0 is the CTC blank."""

    blank = 0

    def __init__(self, model_file: str | os.PathLike) -> None:
        import sentencepiece as spm

        self.path = Path(model_file)
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        except (OSError, RuntimeError) as err:
            raise TokenizerError(f"{model_file}: not a sentencepiece model ({err})") from err
        self.vocab_size = self.sp.get_piece_size() + 1
        # characters of the real pieces only: <unk> and control pieces do not make '<', 'u', ... encodable
        self.charset = {
            c
            for i in range(self.sp.get_piece_size())
            if not (self.sp.is_unknown(i) or self.sp.is_control(i) or self.sp.is_unused(i))
            for c in self.sp.id_to_piece(i).replace("\u2581", " ")
        }
        self.charset.add(" ")

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self.sp.encode(text)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([i - 1 for i in ids if i > 0])

    def unknown_chars(self, text: str) -> set[str]:
        return {c for c in text if c not in self.charset}


def _texts(source) -> list[str]:
    if isinstance(source, (str, os.PathLike)):
        return [e.wrd for e in load_manifest(source, check_audio=False)]
    return [t for t in source]


def train_tokenizer(
    source,
    out_dir: str | os.PathLike,
    kind: str = "unigram",
    vocab_size: int = 256,
    character_coverage: float = 1.0,
) -> Tokenizer:
    """Train a tokenizer on the train transcripts and save it in ``out_dir``.

    Args:
        source: a train manifest path, or an iterable of transcripts.
        out_dir: the experiment folder (writes ``tokenizer.model`` or ``tokenizer.chars.json``,
            and ``tokenizer.json`` with the options).
        kind: ``unigram``, ``bpe`` or ``char``.
        vocab_size: sentencepiece vocabulary (without the blank); ignored for ``char``.

    A tokenizer already in ``out_dir`` that was trained with the same options on the same
    text is loaded instead of retrained.
    """
    if kind not in ("unigram", "bpe", "char"):
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; use unigram, bpe or char")
    texts = _texts(source)
    if not texts:
        raise TokenizerError("no transcripts to train the tokenizer on")
    out = Path(out_dir)
    digest = hashlib.sha1("\n".join(texts).encode("utf-8")).hexdigest()
    meta = {
        "kind": kind,
        "vocab_size": vocab_size if kind != "char" else None,
        "text_sha1": digest,
        "character_coverage": character_coverage,
    }
    meta_path = out / "tokenizer.json"
    model_path = out / ("tokenizer.chars.json" if kind == "char" else "tokenizer.model")
    if meta_path.exists() and model_path.exists():
        try:
            if json.loads(meta_path.read_text()) == meta:
                return load_tokenizer(model_path)
        except ValueError:
            pass
    out.mkdir(parents=True, exist_ok=True)
    # a tokenizer of the other kind left from an earlier run must not be picked up by load_tokenizer
    other = out / ("tokenizer.model" if kind == "char" else "tokenizer.chars.json")
    other.unlink(missing_ok=True)
    if kind == "char":
        chars = CharTokenizer.train(texts)
        chars.save(model_path)
        tok: Tokenizer = chars
    else:
        import sentencepiece as spm

        prefix = out / f".tokenizer.{os.getpid()}"
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(texts),
                model_prefix=str(prefix),
                vocab_size=vocab_size,
                model_type=kind,
                character_coverage=character_coverage,
                bos_id=-1,
                eos_id=-1,
                pad_id=-1,
                unk_id=0,
                hard_vocab_limit=False,
                num_threads=1,
                shuffle_input_sentence=False,
                minloglevel=2,
            )
        except RuntimeError as err:
            raise TokenizerError(f"sentencepiece could not train ({err}); try a smaller vocab_size") from err
        trained = Path(f"{prefix}.model")
        try:  # move the trained model into place through the one atomic writer (bytes, then a rename)
            write_atomic(model_path, lambda tmp: tmp.write_bytes(trained.read_bytes()))
        finally:
            trained.unlink(missing_ok=True)
            Path(f"{prefix}.vocab").unlink(missing_ok=True)
        tok = SentencePieceTokenizer(model_path)
    write_json(meta_path, meta)
    return tok


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load ``tokenizer.model`` (sentencepiece) or ``*.chars.json`` (characters), or a folder holding one."""
    p = Path(path)
    if p.is_dir():
        try:  # the options file says which kind was trained last
            kind = json.loads((p / "tokenizer.json").read_text(encoding="utf-8")).get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None
        if kind in ("char", "unigram", "bpe"):
            name = "tokenizer.chars.json" if kind == "char" else "tokenizer.model"
            if not (p / name).exists():
                raise TokenizerError(
                    f"{p}: tokenizer.json names a {kind} tokenizer but {name} is missing; train it again"
                )
            return load_tokenizer(p / name)
        for name in ("tokenizer.model", "tokenizer.chars.json"):
            if (p / name).exists():
                return load_tokenizer(p / name)
        raise TokenizerError(f"{p}: no tokenizer.model or tokenizer.chars.json in this folder; train one first")
    if not p.exists():
        raise TokenizerError(f"{p}: tokenizer not found")
    if p.suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            tok = CharTokenizer(data["chars"])
        except (ValueError, KeyError, TypeError) as err:
            raise TokenizerError(f"{p}: not a character tokenizer file ({err})") from err
        tok.path = p
        return tok
    return SentencePieceTokenizer(p)
