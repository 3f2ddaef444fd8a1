"""Corpus preparers: turn a corpus as it is distributed into manifests.

=============  ==================================================================  ======================
kind           source                                                              writes
=============  ==================================================================  ======================
librispeech    ``SPLIT/SPEAKER/CHAPTER/*.flac`` + ``SPEAKER-CHAPTER.trans.txt``    ``OUT/SPLIT.csv`` each
               (SRC is the folder holding the splits, or one split folder)
commonvoice    ``train.tsv``, ``dev.tsv``, ``test.tsv`` (any present) and ``clips/``  ``train/valid/test.csv``
folder         audio files (wav/flac/ogg/mp3) with a same-name ``.txt`` beside        ``all.csv`` (or splits)
               them, any nesting; the speaker is the first folder below SRC
csv / jsonl    an existing manifest with other column names (``--map``)              ``OUT`` (or ``OUT/NAME.csv``)
=============  ==================================================================  ======================

Transcripts are normalised with :func:`asr_kd.data.text.normalise_text` (upper case,
punctuation removed except in-word apostrophes, digits spelled out) unless
``normalise=False``. Audio paths in the manifests are absolute (the audio stays where it
is); durations come from the audio headers. A preparer writes ``OUT/.prepared-KIND.json``
when it finishes and skips the work next time if the outputs are there and the options
(and source) are the same.

Example
-------
>>> from asr_kd.data.prepare import prepare
>>> prepare("librispeech", "LibriSpeech", "data/ls")          # doctest: +SKIP
{'dev-clean': PosixPath('data/ls/dev-clean.csv'), ...}
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import UserError
from .audio import AudioError, check_audio
from .manifest import REQUIRED, Entry, write_manifest
from .text import normalise_text

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus")


class PrepareError(UserError, ValueError):
    """The source does not look like the corpus kind; the message says what was expected."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def _durations(paths: list[str]) -> list[float | str]:
    """Each file's duration in seconds, or why it cannot be used (zero-length, truncated, not audio)."""

    def one(p: str) -> float | str:
        try:
            return round(check_audio(p).duration, 4)
        except AudioError as err:
            return str(err).removeprefix(f"{p}: ")

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, paths))


def _finish(entries: list[Entry], skipped: list[str], out_path: Path) -> None:
    durs = _durations([e.wav for e in entries])
    good = []
    for e, d in zip(entries, durs):
        if isinstance(d, str):
            skipped.append(f"{e.wav}: {d}")
            continue
        e.duration = d
        good.append(e)
    write_manifest(out_path, good)
    _log(f"{out_path}: {len(good)} utterances, {sum(e.duration for e in good) / 3600:.2f} h")


def _norm(text: str, normalise: bool) -> str:
    return normalise_text(text) if normalise else " ".join(text.split())


def _read_text_lenient(path: Path) -> str:
    """Read a text file as UTF-8; bytes that are not UTF-8 become lone surrogates (see :func:`_not_utf8`)."""
    return path.read_bytes().decode("utf-8", errors="surrogateescape")


def _not_utf8(*texts: str | None) -> bool:
    """True if any text holds bytes that were not UTF-8 (read with :func:`_read_text_lenient`)."""
    return any(isinstance(t, str) and any("\udc80" <= c <= "\udcff" for c in t) for t in texts)


_NOT_UTF8 = "not UTF-8 text (e.g. latin-1); re-save the file as UTF-8 (iconv -f latin1 -t utf-8)"


# ----- LibriSpeech -----------------------------------------------------------------------------
def _libri_split(split_dir: Path, normalise: bool, skipped: list[str]) -> list[Entry]:
    entries = []
    for trans in sorted(split_dir.glob("*/*/*.trans.txt")):
        for lineno, line in enumerate(_read_text_lenient(trans).splitlines(), 1):
            if not line.strip():
                continue
            if _not_utf8(line):
                skipped.append(f"{trans}:{lineno}: {_NOT_UTF8}")
                continue
            uid, _, text = line.strip().partition(" ")
            audio = trans.parent / f"{uid}.flac"
            if not audio.exists():
                alt = [trans.parent / f"{uid}{ext}" for ext in AUDIO_EXTENSIONS]
                audio = next((a for a in alt if a.exists()), audio)
            if not audio.exists():
                skipped.append(f"{trans}:{lineno}: no audio {audio.name}")
                continue
            entries.append(Entry(uid, None, str(audio.resolve()), uid.split("-")[0], _norm(text, normalise)))
    return entries


def prepare_librispeech(src: Path, out: Path, normalise: bool = True) -> dict[str, Path]:
    """One manifest per split folder of a LibriSpeech tree."""
    if any(src.glob("*/*/*.trans.txt")):
        splits = [src]
    else:
        splits = sorted(d for d in src.iterdir() if d.is_dir() and any(d.glob("*/*/*.trans.txt")))
    if not splits:
        raise PrepareError(
            f"{src}: no LibriSpeech split found; expected SPLIT/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt "
            "beside the .flac files (pass the folder holding the splits, e.g. LibriSpeech/)"
        )
    result, skipped = {}, []
    for d in splits:
        entries = _libri_split(d, normalise, skipped)
        result[d.name] = out / f"{d.name}.csv"
        _finish(entries, skipped, result[d.name])
    _report_skipped(skipped)
    return result


# ----- Common Voice ------------------------------------------------------------------------------
_CV_SPLITS = {"train.tsv": "train", "dev.tsv": "valid", "test.tsv": "test"}


def prepare_commonvoice(src: Path, out: Path, normalise: bool = True) -> dict[str, Path]:
    """``train.tsv``/``dev.tsv``/``test.tsv`` + ``clips/`` -> ``train/valid/test.csv``."""
    tsvs = [(src / name, split) for name, split in _CV_SPLITS.items() if (src / name).exists()]
    if not tsvs:
        raise PrepareError(f"{src}: no train.tsv, dev.tsv or test.tsv; pass the Common Voice language folder (with clips/)")
    clips = src / "clips"
    result, skipped = {}, []
    for tsv, split in tsvs:
        entries = []
        with open(tsv, encoding="utf-8", errors="surrogateescape", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            need = {"client_id", "path", "sentence"}
            if not need <= set(reader.fieldnames or []):
                raise PrepareError(f"{tsv}: columns {sorted(need)} expected, found {reader.fieldnames}")
            for row in reader:
                if _not_utf8(*row.values()):
                    skipped.append(f"{tsv} line {reader.line_num}: {_NOT_UTF8}")
                    continue
                audio = clips / row["path"]
                if not audio.exists():
                    skipped.append(f"{tsv} line {reader.line_num}: clip not found {audio}")
                    continue
                text = _norm(row["sentence"] or "", normalise)
                if not text:
                    skipped.append(f"{tsv} line {reader.line_num}: empty sentence")
                    continue
                uid = Path(row["path"]).stem
                entries.append(Entry(uid, None, str(audio.resolve()), row["client_id"][:16], text))
        result[split] = out / f"{split}.csv"
        _finish(entries, skipped, result[split])
    _report_skipped(skipped)
    return result


# ----- folder of audio + .txt --------------------------------------------------------------------
def split_by_speaker(entries: list[Entry], valid: float, test: float, seed: int = 0) -> dict[str, list[Entry]]:
    """Speaker-disjoint train/valid/test: each speaker goes wholly to one split (by a seeded hash)."""
    speakers = sorted({e.spk_id for e in entries}, key=lambda s: hashlib.sha1(f"{seed}:{s}".encode()).hexdigest())
    n = len(speakers)
    n_test = max(1, round(n * test)) if test > 0 else 0
    n_valid = max(1, round(n * valid)) if valid > 0 else 0
    if n_test + n_valid >= n:
        raise PrepareError(f"{n} speaker(s) cannot be split speaker-disjointly into train/valid/test; "
                           "lower --valid/--test or add speakers")
    which = {s: "test" for s in speakers[:n_test]}
    which.update({s: "valid" for s in speakers[n_test:n_test + n_valid]})
    out: dict[str, list[Entry]] = {"train": [], "valid": [], "test": []}
    for e in entries:
        out[which.get(e.spk_id, "train")].append(e)
    return {k: v for k, v in out.items() if v}


def prepare_folder(src: Path, out: Path, normalise: bool = True, valid: float = 0.0, test: float = 0.0,
                   seed: int = 0, speaker_depth: int = 1) -> dict[str, Path]:
    """Audio files with same-name ``.txt`` transcripts, any nesting.

    The speaker is named by the first ``speaker_depth`` folders below ``src``
    (``SRC/alice/session1/x.wav`` -> ``alice`` with depth 1, ``alice_session1`` with depth 2);
    depth 0 puts everything under one speaker. Files directly in ``src`` get ``speaker0``.
    """
    if src.is_file():
        raise PrepareError(f"{src}: a file, not a folder; pass the folder that holds the audio files and their "
                           ".txt transcripts (a CSV/JSONL manifest is converted with `prepare csv` / `prepare jsonl`)")
    audio = sorted(p for p in src.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if not audio:
        raise PrepareError(f"{src}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found below this folder")
    entries, skipped, seen = [], [], {}
    for a in audio:
        txt = a.with_suffix(".txt")
        if not txt.exists():
            skipped.append(f"{a}: no transcript {txt.name} beside it")
            continue
        try:
            text = _norm(txt.read_text(encoding="utf-8"), normalise)
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
    result = {}
    groups = split_by_speaker(entries, valid, test, seed) if (valid or test) else {"all": entries}
    for split, es in groups.items():
        result[split] = out / f"{split}.csv"
        _finish(es, skipped, result[split])
    _report_skipped(skipped)
    return result


# ----- an existing CSV / JSONL manifest with other column names ----------------------------------
def parse_mapping(spec: str | None) -> dict[str, str]:
    """``"ID=utt,wrd=text"`` -> ``{"ID": "utt", "wrd": "text"}`` (ours = theirs)."""
    mapping: dict[str, str] = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise PrepareError(f"bad --map item {part!r}; write OURS=THEIRS, e.g. wrd=sentence,wav=path")
        ours, theirs = (s.strip() for s in part.split("=", 1))
        if ours not in REQUIRED:
            raise PrepareError(f"--map: {ours!r} is not a manifest column; map onto {', '.join(REQUIRED)}")
        mapping[ours] = theirs
    return mapping


def prepare_table(src: Path, out: Path, mapping: dict[str, str], normalise: bool = True) -> dict[str, Path]:
    """Rename columns of a CSV/JSONL manifest, resolve paths, fill durations, normalise text."""
    rows, columns = _read_table(src)
    missing = [theirs for theirs in mapping.values() if theirs not in columns]
    if missing:
        raise PrepareError(f"{src}: --map names column(s) {missing} that are not in the file (it has {columns})")
    col = {c: mapping.get(c, c) for c in REQUIRED}
    for need in ("wav", "wrd"):
        if col[need] not in columns:
            raise PrepareError(f"{src}: no {need!r} column; map one with --map {need}=COLUMN (columns: {columns})")
    base = src.resolve().parent
    entries, skipped = [], []
    seen: dict[str, int] = {}
    stems: dict[str, int] = {}  # file names of the rows without an ID, to derive IDs that do not collide
    for r in rows:
        if not (r.get(col["ID"]) or "").strip():
            stem = Path((r.get(col["wav"]) or "").strip()).stem
            stems[stem] = stems.get(stem, 0) + 1
    for i, r in enumerate(rows, 1):
        if _not_utf8(*r.values()):
            skipped.append(f"{src} row {i}: {_NOT_UTF8}")
            continue
        wav = (r.get(col["wav"]) or "").strip().replace("$data_root", str(base))
        if not wav:
            skipped.append(f"{src} row {i}: empty {col['wav']!r} (no audio path)")
            continue
        # relative paths are relative to the source file's folder; the manifest gets absolute ones
        path = Path(os.path.abspath(wav if os.path.isabs(wav) else base / wav))
        if (r.get(col["ID"]) or "").strip():
            uid = r[col["ID"]].strip()
        elif stems.get(path.stem, 0) <= 1:  # the file name, when no other row's file has it
            uid = path.stem
        else:  # same file name in several folders: the folders name the ID too
            try:
                uid = "_".join(path.relative_to(base).with_suffix("").parts)
            except ValueError:
                uid = "_".join(path.with_suffix("").parts[1:])
        spk = r.get(col["spk_id"]) or "speaker0"
        extra = {k: v for k, v in r.items() if k not in col.values() and k is not None}
        text = _norm(r.get(col["wrd"]) or "", normalise)
        if not text:
            skipped.append(f"{src} row {i}: empty transcript")
            continue
        if uid in seen:
            skipped.append(f"{src} row {i}: duplicate ID {uid!r} (first in row {seen[uid]}); IDs must be unique")
            continue
        if not path.exists():
            skipped.append(f"{src} row {i}: audio not found {path}")
            continue
        seen[uid] = i
        entries.append(Entry(uid, None, str(path), spk, text, extra=extra))
    out_path = out if out.suffix.lower() in (".csv", ".jsonl") else out / f"{src.stem}.csv"
    _finish(entries, skipped, out_path)
    _report_skipped(skipped)
    return {src.stem: out_path}


def _read_table(src: Path) -> tuple[list[dict[str, str]], list[str]]:
    if not src.is_file():
        raise PrepareError(f"{src}: not a file; pass the CSV/JSONL manifest to convert")
    text = _read_text_lenient(src).lstrip("\ufeff")
    if src.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append({str(k): "" if v is None else str(v) for k, v in json.loads(line).items()})
                except (ValueError, AttributeError) as err:
                    raise PrepareError(f"{src} line {n}: not a JSON object ({err})") from err
        cols = sorted({k for r in rows for k in r})
        return rows, cols
    sample = text[:4096]
    delim = "\t" if sample.count("\t") > sample.count(",") else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delim)
    rows = list(reader)
    return rows, list(reader.fieldnames or [])


# ----- driver --------------------------------------------------------------------------------------
def _report_skipped(skipped: list[str]) -> None:
    if skipped:
        shown = "\n  ".join(skipped[:50])
        more = f"\n  ... and {len(skipped) - 50} more" if len(skipped) > 50 else ""
        _log(f"skipped {len(skipped)} item(s):\n  {shown}{more}")


def _source_signature(src: Path) -> str:
    """Cheap fingerprint of the source: names, sizes and mtimes of its text and audio files."""
    h = hashlib.sha1()
    exts = (".txt", ".tsv", ".csv", ".jsonl", *AUDIO_EXTENSIONS)
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.suffix.lower() in exts and p.is_file())
    for p in files:
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


KINDS: dict[str, Callable] = {
    "librispeech": prepare_librispeech,
    "commonvoice": prepare_commonvoice,
    "folder": prepare_folder,
    "csv": prepare_table,
    "jsonl": prepare_table,
}


def prepare(kind: str, src: str | os.PathLike, out: str | os.PathLike, force: bool = False, **options) -> dict[str, Path]:
    """Run the preparer ``kind`` on ``src``, writing into ``out``; skip it if already done alike.

    Args:
        kind: one of :data:`KINDS`.
        src: the corpus folder (or, for csv/jsonl, the manifest file).
        out: output folder (csv/jsonl: a folder or a .csv/.jsonl file).
        force: redo even if a complete result with the same options exists.
        options: ``normalise`` (all), ``valid``/``test``/``seed``/``speaker_depth`` (folder),
            ``mapping`` (csv/jsonl).
    """
    if kind not in KINDS:
        raise PrepareError(f"unknown corpus kind {kind!r}; choose one of {', '.join(KINDS)}")
    src, out = Path(src), Path(out)
    if not src.exists():
        raise PrepareError(f"{src}: not found")
    if kind not in ("csv", "jsonl") and src.is_file():
        raise PrepareError(f"{src}: a file, not a folder; `prepare {kind}` takes the corpus folder "
                           "(a CSV/JSONL manifest is converted with `prepare csv` / `prepare jsonl`)")
    stamp_dir = out.parent if out.suffix.lower() in (".csv", ".jsonl") else out
    stamp = stamp_dir / f".prepared-{kind}-{out.stem if stamp_dir != out else 'all'}.json"
    sig = {"kind": kind, "src": str(src.resolve()), "source": _source_signature(src),
           "options": {k: options[k] for k in sorted(options)}}
    old_outputs: list[Path] = []
    if stamp.exists():
        try:
            old = json.loads(stamp.read_text())
            old_outputs = [Path(p) for p in old["outputs"].values()]
            if not force and old.get("signature") == sig and all(p.exists() for p in old_outputs):
                _log(f"{out}: already prepared from {src} with the same options; nothing to do (--force redoes it)")
                return {k: Path(v) for k, v in old["outputs"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            old_outputs = []
    stamp_dir.mkdir(parents=True, exist_ok=True)
    fn = KINDS[kind]
    if kind in ("csv", "jsonl"):
        result = fn(src, out, options.get("mapping") or {}, normalise=options.get("normalise", True))
    elif kind == "folder":
        result = fn(src, out, normalise=options.get("normalise", True), valid=options.get("valid", 0.0),
                    test=options.get("test", 0.0), seed=options.get("seed", 0),
                    speaker_depth=options.get("speaker_depth", 1))
    else:
        result = fn(src, out, normalise=options.get("normalise", True))
    # outputs of the previous run that this run did not write again (e.g. all.csv, now that there are
    # splits) would be stale and mislead: remove them (only manifests the previous stamp recorded)
    new_outputs = {Path(v).resolve() for v in result.values()}
    for p in old_outputs:
        if p.resolve() not in new_outputs and p.suffix.lower() in (".csv", ".jsonl") and p.is_file():
            p.unlink()
            _log(f"{p}: removed (written by the previous run, not by this one)")
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(json.dumps({"signature": sig, "outputs": {k: str(v) for k, v in result.items()}}, indent=1))
    os.replace(tmp, stamp)
    return result
