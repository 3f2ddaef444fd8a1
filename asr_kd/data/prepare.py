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

Where the code is: the readers of each kind of source (:mod:`~asr_kd.data.prepare_corpora`,
:mod:`~asr_kd.data.prepare_tables`) give entries and the list of what they skipped; this
module fills in the durations, writes the manifests, logs what was skipped and keeps the stamp.

Example
-------
>>> import tempfile
>>> import numpy as np
>>> from pathlib import Path
>>> from asr_kd.data.audio import write_audio
>>> from asr_kd.data.manifest import read_manifest
>>> src, out = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
>>> write_audio(src / "alice" / "one.wav", np.zeros(8000, dtype=np.float32), 16000)
>>> _ = (src / "alice" / "one.txt").write_text("Hello there")
>>> result = prepare("folder", src, out)
>>> list(result), [(e.id, e.duration, e.wrd) for e in read_manifest(result["all"])]
(['all'], [('alice_one', 0.5, 'HELLO THERE')])
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..io import read_json, write_json
from .audio import AudioError, check_audio
from .manifest_io import Entry, write_manifest
from .prepare_common import AUDIO_EXTENSIONS, PrepareError
from .prepare_corpora import commonvoice_splits, folder_entries, librispeech_splits, split_by_speaker
from .prepare_tables import parse_mapping, table_entries

__all__ = [
    "AUDIO_EXTENSIONS",
    "KINDS",
    "PrepareError",
    "parse_mapping",
    "prepare",
    "prepare_commonvoice",
    "prepare_folder",
    "prepare_librispeech",
    "prepare_table",
    "split_by_speaker",
]

log = logging.getLogger(__name__)


# ----- the part every kind shares: durations, manifests, the skipped list -----------------------
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
    """Fill in the durations, skip the audio that cannot be used, write the manifest."""
    good, seconds = [], 0.0
    for e, d in zip(entries, _durations([e.wav for e in entries]), strict=True):
        if isinstance(d, str):
            skipped.append(f"{e.wav}: {d}")
            continue
        e.duration = d
        seconds += d
        good.append(e)
    write_manifest(out_path, good)
    log.info(f"{out_path}: {len(good)} utterances, {seconds / 3600:.2f} h")


def _write_groups(
    groups: Iterable[tuple[str, list[Entry]]], skipped: list[str], path_of: Callable[[str], Path]
) -> dict[str, Path]:
    """One manifest per ``(name, entries)``, at ``path_of(name)``; then the skipped list (a warning)."""
    result = {}
    for name, entries in groups:
        result[name] = path_of(name)
        _finish(entries, skipped, result[name])
    if skipped:
        shown = "\n  ".join(skipped[:50])
        more = f"\n  ... and {len(skipped) - 50} more" if len(skipped) > 50 else ""
        log.warning(f"skipped {len(skipped)} item(s):\n  {shown}{more}")
    return result


# ----- one preparer per kind ---------------------------------------------------------------------
def prepare_librispeech(src: Path, out: Path, normalise: bool = True) -> dict[str, Path]:
    """One manifest per split folder of a LibriSpeech tree."""
    skipped: list[str] = []
    return _write_groups(librispeech_splits(src, normalise, skipped), skipped, lambda name: out / f"{name}.csv")


def prepare_commonvoice(src: Path, out: Path, normalise: bool = True) -> dict[str, Path]:
    """``train.tsv``/``dev.tsv``/``test.tsv`` + ``clips/`` -> ``train/valid/test.csv``."""
    skipped: list[str] = []
    return _write_groups(commonvoice_splits(src, normalise, skipped), skipped, lambda name: out / f"{name}.csv")


def prepare_folder(
    src: Path,
    out: Path,
    normalise: bool = True,
    valid: float = 0.0,
    test: float = 0.0,
    seed: int = 0,
    speaker_depth: int = 1,
) -> dict[str, Path]:
    """Audio files with same-name ``.txt`` transcripts, any nesting.

    The speaker is named by the first ``speaker_depth`` folders below ``src``
    (``SRC/alice/session1/x.wav`` -> ``alice`` with depth 1, ``alice_session1`` with depth 2);
    depth 0 puts everything under one speaker. Files directly in ``src`` get ``speaker0``.
    ``valid``/``test`` > 0 split the speakers (:func:`split_by_speaker`) instead of one ``all.csv``.
    """
    skipped: list[str] = []
    entries = folder_entries(src, normalise, speaker_depth, skipped)
    groups = split_by_speaker(entries, valid, test, seed) if (valid or test) else {"all": entries}
    return _write_groups(groups.items(), skipped, lambda name: out / f"{name}.csv")


def prepare_table(src: Path, out: Path, mapping: dict[str, str], normalise: bool = True) -> dict[str, Path]:
    """Rename columns of a CSV/JSONL manifest, resolve paths, fill durations, normalise text."""
    skipped: list[str] = []
    entries = table_entries(src, mapping, normalise, skipped)
    out_path = out if out.suffix.lower() in (".csv", ".jsonl") else out / f"{src.stem}.csv"
    return _write_groups([(src.stem, entries)], skipped, lambda name: out_path)


# ----- driver --------------------------------------------------------------------------------------
def _source_signature(src: Path) -> str:
    """Cheap fingerprint of the source: names, sizes and mtimes of its text and audio files."""
    h = hashlib.sha1()
    exts = (".txt", ".tsv", ".csv", ".jsonl", *AUDIO_EXTENSIONS)
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.suffix.lower() in exts and p.is_file())
    for p in files:
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


KINDS: dict[str, Callable[..., dict[str, Path]]] = {
    "librispeech": prepare_librispeech,
    "commonvoice": prepare_commonvoice,
    "folder": prepare_folder,
    "csv": prepare_table,
    "jsonl": prepare_table,
}


def _run(kind: str, src: Path, out: Path, options: dict) -> dict[str, Path]:
    """Call the preparer of ``kind`` with the options it takes."""
    normalise = options.get("normalise", True)
    if kind in ("csv", "jsonl"):
        return prepare_table(src, out, options.get("mapping") or {}, normalise=normalise)
    if kind == "folder":
        return prepare_folder(
            src,
            out,
            normalise=normalise,
            valid=options.get("valid", 0.0),
            test=options.get("test", 0.0),
            seed=options.get("seed", 0),
            speaker_depth=options.get("speaker_depth", 1),
        )
    return KINDS[kind](src, out, normalise=normalise)


def prepare(
    kind: str, src: str | os.PathLike, out: str | os.PathLike, force: bool = False, **options
) -> dict[str, Path]:
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
        raise PrepareError(
            f"{src}: a file, not a folder; `prepare {kind}` takes the corpus folder "
            "(a CSV/JSONL manifest is converted with `prepare csv` / `prepare jsonl`)"
        )
    stamp_dir = out.parent if out.suffix.lower() in (".csv", ".jsonl") else out
    stamp = stamp_dir / f".prepared-{kind}-{out.stem if stamp_dir != out else 'all'}.json"
    sig = {
        "kind": kind,
        "src": str(src.resolve()),
        "source": _source_signature(src),
        "options": {k: options[k] for k in sorted(options)},
    }
    old_outputs: list[Path] = []
    if stamp.exists():
        try:
            old = read_json(stamp)
            old_outputs = [Path(p) for p in old["outputs"].values()]
            if not force and old.get("signature") == sig and all(p.exists() for p in old_outputs):
                log.info(f"{out}: already prepared from {src} with the same options; nothing to do (--force redoes it)")
                return {k: Path(v) for k, v in old["outputs"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            old_outputs = []
    stamp_dir.mkdir(parents=True, exist_ok=True)
    result = _run(kind, src, out, options)
    # outputs of the previous run that this run did not write again (e.g. all.csv, now that there are
    # splits) would be stale and mislead: remove them (only manifests the previous stamp recorded)
    new_outputs = {Path(v).resolve() for v in result.values()}
    for p in old_outputs:
        if p.resolve() not in new_outputs and p.suffix.lower() in (".csv", ".jsonl") and p.is_file():
            p.unlink()
            log.info(f"{p}: removed (written by the previous run, not by this one)")
    write_json(stamp, {"signature": sig, "outputs": {k: str(v) for k, v in result.items()}})
    return result
