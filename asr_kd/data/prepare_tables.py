"""The entries of an existing CSV / JSONL manifest whose columns have other names (``--map``).

``parse_mapping("wrd=sentence,wav=path")`` says which of their columns is which of ours;
:func:`table_entries` renames, resolves audio paths (relative to the file's folder) and
normalises the text, appending what it cannot use to ``skipped``. Durations are filled in and
the manifest written by :func:`asr_kd.data.prepare.prepare_table`.

Example
-------
>>> from asr_kd.data.prepare_tables import parse_mapping
>>> parse_mapping("ID=utt, wrd=text")
{'ID': 'utt', 'wrd': 'text'}
>>> parse_mapping("words=text")  # doctest: +ELLIPSIS
Traceback (most recent call last):
asr_kd.data.prepare_common.PrepareError: --map: 'words' is not a manifest column; map onto ID, ...
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from .manifest_io import REQUIRED, Entry
from .prepare_common import NOT_UTF8, PrepareError, clean_text, not_utf8, read_text_lenient


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


def table_entries(src: Path, mapping: dict[str, str], normalise: bool, skipped: list[str]) -> list[Entry]:
    """The usable rows of ``src`` (CSV or JSONL) as entries without durations."""
    rows, columns = _read_table(src)
    missing = [theirs for theirs in mapping.values() if theirs not in columns]
    if missing:
        raise PrepareError(f"{src}: --map names column(s) {missing} that are not in the file (it has {columns})")
    col = {c: mapping.get(c, c) for c in REQUIRED}
    for need in ("wav", "wrd"):
        if col[need] not in columns:
            raise PrepareError(f"{src}: no {need!r} column; map one with --map {need}=COLUMN (columns: {columns})")
    base = src.resolve().parent
    entries = []
    seen: dict[str, int] = {}
    stems: dict[str, int] = {}  # file names of the rows without an ID, to derive IDs that do not collide
    for r in rows:
        if not (r.get(col["ID"]) or "").strip():
            stem = Path((r.get(col["wav"]) or "").strip()).stem
            stems[stem] = stems.get(stem, 0) + 1
    for i, r in enumerate(rows, 1):
        if not_utf8(*r.values()):
            skipped.append(f"{src} row {i}: {NOT_UTF8}")
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
        text = clean_text(r.get(col["wrd"]) or "", normalise)
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
    return entries


def _read_table(src: Path) -> tuple[list[dict[str, str]], list[str]]:
    if not src.is_file():
        raise PrepareError(f"{src}: not a file; pass the CSV/JSONL manifest to convert")
    text = read_text_lenient(src).lstrip("\ufeff")
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
