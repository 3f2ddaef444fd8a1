"""The entries of a corpus as it is distributed: LibriSpeech, Common Voice, a folder of audio + .txt.

Each reader yields ``(name, entries)`` per output manifest and appends what it cannot use to
``skipped`` (one line each, naming the file and line); durations are filled in and the
manifests written by :mod:`asr_kd.data.prepare`. The readers are generators, so each split is
read just before it is written.

Example
-------
>>> import tempfile
>>> from pathlib import Path
>>> from asr_kd.data.prepare_corpora import folder_entries
>>> src = Path(tempfile.mkdtemp())
>>> (src / "alice").mkdir()
>>> _ = (src / "alice" / "one.wav").write_bytes(b"")
>>> _ = (src / "alice" / "one.txt").write_text("Hello there, 2 cats")
>>> skipped = []
>>> [(e.id, e.spk_id, e.wrd) for e in folder_entries(src, True, 1, skipped)], skipped
([('alice_one', 'alice', 'HELLO THERE TWO CATS')], [])
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from pathlib import Path

from .manifest_io import Entry
from .prepare_common import AUDIO_EXTENSIONS, NOT_UTF8, PrepareError, clean_text, not_utf8, read_text_lenient

#: Common Voice's files and the split each becomes.
CV_SPLITS = {"train.tsv": "train", "dev.tsv": "valid", "test.tsv": "test"}


# ----- LibriSpeech -----------------------------------------------------------------------------
def _libri_split(split_dir: Path, normalise: bool, skipped: list[str]) -> list[Entry]:
    entries = []
    for trans in sorted(split_dir.glob("*/*/*.trans.txt")):
        for lineno, line in enumerate(read_text_lenient(trans).splitlines(), 1):
            if not line.strip():
                continue
            if not_utf8(line):
                skipped.append(f"{trans}:{lineno}: {NOT_UTF8}")
                continue
            uid, _, text = line.strip().partition(" ")
            audio = trans.parent / f"{uid}.flac"
            if not audio.exists():
                alt = [trans.parent / f"{uid}{ext}" for ext in AUDIO_EXTENSIONS]
                audio = next((a for a in alt if a.exists()), audio)
            if not audio.exists():
                skipped.append(f"{trans}:{lineno}: no audio {audio.name}")
                continue
            entries.append(Entry(uid, None, str(audio.resolve()), uid.split("-")[0], clean_text(text, normalise)))
    return entries


def librispeech_splits(src: Path, normalise: bool, skipped: list[str]) -> Iterator[tuple[str, list[Entry]]]:
    """One ``(split folder name, entries)`` per split folder of a LibriSpeech tree (or ``src`` itself)."""
    if any(src.glob("*/*/*.trans.txt")):
        splits = [src]
    else:
        splits = sorted(d for d in src.iterdir() if d.is_dir() and any(d.glob("*/*/*.trans.txt")))
    if not splits:
        raise PrepareError(
            f"{src}: no LibriSpeech split found; expected SPLIT/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt "
            "beside the .flac files (pass the folder holding the splits, e.g. LibriSpeech/)"
        )
    for d in splits:
        yield d.name, _libri_split(d, normalise, skipped)


# ----- Common Voice ------------------------------------------------------------------------------
def _commonvoice_tsv(tsv: Path, clips: Path, normalise: bool, skipped: list[str]) -> list[Entry]:
    entries = []
    with open(tsv, encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        need = {"client_id", "path", "sentence"}
        if not need <= set(reader.fieldnames or []):
            raise PrepareError(f"{tsv}: columns {sorted(need)} expected, found {reader.fieldnames}")
        for row in reader:
            if not_utf8(*row.values()):
                skipped.append(f"{tsv} line {reader.line_num}: {NOT_UTF8}")
                continue
            audio = clips / row["path"]
            if not audio.exists():
                skipped.append(f"{tsv} line {reader.line_num}: clip not found {audio}")
                continue
            text = clean_text(row["sentence"] or "", normalise)
            if not text:
                skipped.append(f"{tsv} line {reader.line_num}: empty sentence")
                continue
            uid = Path(row["path"]).stem
            entries.append(Entry(uid, None, str(audio.resolve()), row["client_id"][:16], text))
    return entries


def commonvoice_splits(src: Path, normalise: bool, skipped: list[str]) -> Iterator[tuple[str, list[Entry]]]:
    """``train.tsv``/``dev.tsv``/``test.tsv`` (those present) + ``clips/`` -> ``("train"|"valid"|"test", entries)``."""
    tsvs = [(src / name, split) for name, split in CV_SPLITS.items() if (src / name).exists()]
    if not tsvs:
        raise PrepareError(
            f"{src}: no train.tsv, dev.tsv or test.tsv; pass the Common Voice language folder (with clips/)"
        )
    for tsv, split in tsvs:
        yield split, _commonvoice_tsv(tsv, src / "clips", normalise, skipped)


# ----- folder of audio + .txt --------------------------------------------------------------------
def folder_entries(src: Path, normalise: bool, speaker_depth: int, skipped: list[str]) -> list[Entry]:
    """Audio files with a same-name ``.txt`` beside them, any nesting.

    See :func:`asr_kd.data.prepare.prepare_folder` for how ``speaker_depth`` names the speaker.
    """
    if src.is_file():
        raise PrepareError(
            f"{src}: a file, not a folder; pass the folder that holds the audio files and their "
            ".txt transcripts (a CSV/JSONL manifest is converted with `prepare csv` / `prepare jsonl`)"
        )
    audio = sorted(p for p in src.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if not audio:
        raise PrepareError(f"{src}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found below this folder")
    entries: list[Entry] = []
    seen: dict[str, Path] = {}
    for a in audio:
        txt = a.with_suffix(".txt")
        if not txt.exists():
            skipped.append(f"{a}: no transcript {txt.name} beside it")
            continue
        try:
            text = clean_text(txt.read_text(encoding="utf-8"), normalise)
        except UnicodeDecodeError:
            skipped.append(f"{txt}: not UTF-8 text; re-save it as UTF-8")
            continue
        if not text:
            skipped.append(f"{txt}: empty transcript")
            continue
        rel = a.relative_to(src)
        spk = "_".join(rel.parent.parts[:speaker_depth]) if speaker_depth > 0 else ""
        spk = spk or "speaker0"
        uid = "_".join(rel.with_suffix("").parts)
        if uid in seen:
            skipped.append(f"{a}: same name as {seen[uid]} (one ID per recording)")
            continue
        seen[uid] = a
        entries.append(Entry(uid, None, str(a.resolve()), spk, text))
    return entries


def split_by_speaker(entries: list[Entry], valid: float, test: float, seed: int = 0) -> dict[str, list[Entry]]:
    """Speaker-disjoint train/valid/test: each speaker goes wholly to one split (by a seeded hash)."""
    speakers = sorted({e.spk_id for e in entries}, key=lambda s: hashlib.sha1(f"{seed}:{s}".encode()).hexdigest())
    n = len(speakers)
    n_test = max(1, round(n * test)) if test > 0 else 0
    n_valid = max(1, round(n * valid)) if valid > 0 else 0
    if n_test + n_valid >= n:
        raise PrepareError(
            f"{n} speaker(s) cannot be split speaker-disjointly into train/valid/test; "
            "lower --valid/--test or add speakers"
        )
    which = {s: "test" for s in speakers[:n_test]}
    which.update({s: "valid" for s in speakers[n_test : n_test + n_valid]})
    out: dict[str, list[Entry]] = {"train": [], "valid": [], "test": []}
    for e in entries:
        out[which.get(e.spk_id, "train")].append(e)
    return {k: v for k, v in out.items() if v}
