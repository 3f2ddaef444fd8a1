"""Manifest files: one row per utterance, ``ID,duration,wav,spk_id,wrd`` (more columns allowed).

A CSV manifest is the one SpeechBrain recipes read (``wav`` may start with ``$data_root``,
which is replaced by the manifest's own folder unless another root is given). A JSONL
manifest (one JSON object per line with the same fields) is accepted too.

This module only reads and writes; it never judges a row. :mod:`asr_kd.data.validate` checks
rows, and :func:`asr_kd.data.manifest.load_manifest` reads and validates for training.

Example
-------
>>> import tempfile, os
>>> from asr_kd.data.manifest_io import Entry, write_manifest, read_manifest
>>> path = os.path.join(tempfile.mkdtemp(), "train.csv")
>>> write_manifest(path, [Entry("u1", 1.5, "$data_root/u1.wav", "spk1", "HELLO WORLD")])
>>> rows = read_manifest(path)
>>> rows[0].id, rows[0].wav == os.path.join(os.path.dirname(path), "u1.wav")
('u1', True)
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import UserError
from ..io import write_atomic

#: Columns every manifest must have, in SpeechBrain's order.
REQUIRED = ("ID", "duration", "wav", "spk_id", "wrd")


class ManifestError(UserError):
    """A manifest cannot be used as it is; the message lists every problem, each with its fix."""


@dataclass
class Entry:
    """One utterance. ``wav`` is resolved (``$data_root`` replaced); ``raw_wav`` is as written."""

    id: str
    duration: float | None
    wav: str
    spk_id: str
    wrd: str
    extra: dict[str, str] = field(default_factory=dict)
    row: int = 0  #: 1-based data row (the header is not counted)
    line: int = 0  #: 1-based line of the file where the row starts
    raw_duration: str = ""
    raw_wav: str = ""
    bad_utf8: bool = False  #: the row's bytes were not valid UTF-8 (shown with U+FFFD)
    parse_error: str = ""  #: e.g. a wrong number of fields

    def as_row(self) -> dict[str, str]:
        dur = self.raw_duration or ("" if self.duration is None else f"{self.duration:.3f}")
        return {
            "ID": self.id,
            "duration": dur,
            "wav": self.raw_wav or self.wav,
            "spk_id": self.spk_id,
            "wrd": self.wrd,
            **self.extra,
        }


@dataclass
class RawManifest:
    """What :func:`read_manifest_raw` found: entries plus file-level problems (no columns ...)."""

    path: Path
    entries: list[Entry]
    file_errors: list[str]
    columns: list[str]


def _decode_lines(data: bytes) -> tuple[str, set[int]]:
    """Decode line by line; lines that are not UTF-8 are decoded with U+FFFD and reported."""
    bad: set[int] = set()
    out = []
    for i, line in enumerate(data.splitlines(keepends=True), start=1):
        try:
            out.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            bad.add(i)
            out.append(line.decode("utf-8", errors="replace"))
    text = "".join(out)
    return text.lstrip("\ufeff"), bad


def _resolve(wav: str, root: str) -> str:
    return wav.replace("$data_root", root).replace("${data_root}", root)


def _float(s: str) -> float | None:
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def manifest_format(path: str | os.PathLike) -> str:
    """``"jsonl"`` for .jsonl/.json files, otherwise ``"csv"``."""
    return "jsonl" if str(path).lower().endswith((".jsonl", ".json", ".ndjson")) else "csv"


def read_manifest_raw(path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> RawManifest:
    """Parse a CSV or JSONL manifest without validating it (never raises on bad content)."""
    path = Path(path)
    root = str(Path(data_root) if data_root is not None else path.resolve().parent)
    errors: list[str] = []
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return RawManifest(path, [], [f"{path}: manifest not found; check the path"], [])
    except OSError as err:
        return RawManifest(path, [], [f"{path}: cannot read the manifest ({err.strerror})"], [])
    if b"\0" in data[:8192]:
        return RawManifest(
            path,
            [],
            [
                f"{path}: a binary file, not a CSV or JSONL manifest; pass the manifest "
                "(asr-kd prepare makes one from a corpus)"
            ],
            [],
        )
    text, bad_lines = _decode_lines(data)
    entries: list[Entry] = []
    columns: list[str] = []
    if manifest_format(path) == "jsonl":
        row = 0
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            row += 1
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not an object")
            except ValueError as err:
                errors.append(f"{path} line {lineno}: not a JSON object ({err}); write one {{...}} per line")
                continue
            obj = {str(k): "" if v is None else str(v) for k, v in obj.items()}
            for k in obj:
                if k not in columns:
                    columns.append(k)
            entries.append(_entry(obj, row, lineno, root, lineno in bad_lines))
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader)
        except StopIteration:
            return RawManifest(
                path, [], [f"{path}: the manifest is empty; it needs a header line {','.join(REQUIRED)}"], []
            )
        except csv.Error as err:
            return RawManifest(path, [], [f"{path} line 1: CSV error ({err})"], [])
        columns = [h.strip() for h in header]
        row, start = 0, reader.line_num + 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                errors.append(f"{path} line {start}: CSV error ({err}); check the quoting on that line")
                start = reader.line_num + 1
                continue
            if not values or all(not v.strip() for v in values):
                start = reader.line_num + 1
                continue
            row += 1
            end = reader.line_num
            obj = dict(zip(columns, values, strict=False))  # a short or long row is reported below
            bad = any(i in bad_lines for i in range(start, end + 1))
            entries.append(_entry(obj, row, start, root, bad))
            if len(values) != len(columns):
                entries[-1].parse_error = f"{len(values)} fields, the header has {len(columns)}"
            start = end + 1
    missing = [c for c in REQUIRED if c not in columns]
    if missing and (entries or manifest_format(path) == "csv"):
        errors.append(
            f"{path}: missing column(s) {', '.join(missing)}; a manifest needs {','.join(REQUIRED)} "
            "(map other names with `asr-kd prepare csv --map`)"
        )
    return RawManifest(path, entries, errors, columns)


def _entry(obj: dict[str, str], row: int, line: int, root: str, bad_utf8: bool) -> Entry:
    raw_wav = obj.get("wav", "")
    raw_dur = obj.get("duration", "")
    return Entry(
        id=obj.get("ID", "").strip(),
        duration=_float(raw_dur),
        wav=_resolve(raw_wav.strip(), root),
        spk_id=obj.get("spk_id", "").strip(),
        wrd=obj.get("wrd", ""),
        extra={k: v for k, v in obj.items() if k not in REQUIRED},
        row=row,
        line=line,
        raw_duration=raw_dur,
        raw_wav=raw_wav,
        bad_utf8=bad_utf8,
    )


def read_manifest(path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> list[Entry]:
    """Parse a manifest; raise :class:`ManifestError` only if it cannot be parsed at all."""
    raw = read_manifest_raw(path, data_root)
    if raw.file_errors and not raw.entries:
        raise ManifestError("\n".join(raw.file_errors))
    return raw.entries


def write_manifest(path: str | os.PathLike, entries: Iterable[Entry], extra_columns: Sequence[str] = ()) -> None:
    """Write entries as CSV or JSONL (by extension), atomically (:func:`asr_kd.io.write_atomic`).

    A ``wav`` read as ``$data_root/...`` is written as it was read if it resolves to the same file
    from ``path``'s folder, otherwise as the absolute path it was resolved to.
    """
    path = Path(path)
    root = str(path.resolve().parent)
    rows = []
    for e in entries:
        r = e.as_row()
        # a $data_root path read from a manifest in another folder would point into this one:
        # write the path it was resolved to instead
        if "$" in e.raw_wav and "$" not in e.wav and _resolve(e.raw_wav.strip(), root) != e.wav:
            r["wav"] = e.wav
        rows.append(r)
    cols = list(REQUIRED) + [c for c in extra_columns if c not in REQUIRED]
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    jsonl = manifest_format(path) == "jsonl"

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            _write_rows(f, rows, cols, jsonl)

    write_atomic(path, write)


def _write_rows(f: IO[str], rows: list[dict[str, str]], cols: list[str], jsonl: bool) -> None:
    if jsonl:
        for r in rows:
            obj: dict[str, Any] = {c: r.get(c, "") for c in cols}
            obj["duration"] = _float(obj["duration"]) if _float(obj["duration"]) is not None else obj["duration"]
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    else:
        w = csv.DictWriter(f, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
