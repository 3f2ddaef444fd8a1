"""Check every row of a manifest and report every problem at once, each with its row and a fix.

Errors (a row with one cannot be trained on): missing audio file, unreadable / truncated /
not-audio file, zero-length audio, duplicate ID, empty ID, non-finite, non-positive or wrong
duration, empty transcript, non-UTF-8 text, characters the tokenizer cannot encode (without a
tokenizer: anything :func:`asr_kd.data.text.normalise_text` does not produce, see
:func:`default_unknown_chars`), missing speaker.
Notes (the row is fine): audio at another sample rate or with several channels, which is
resampled / downmixed on load. A manifest without rows is an error of the whole file.

Example
-------
>>> import os, tempfile
>>> from asr_kd.data.validate import validate_manifest
>>> path = os.path.join(tempfile.mkdtemp(), "train.csv")
>>> _ = open(path, "w").write("ID,duration,wav,spk_id,wrd\\nu1,1.0,$data_root/missing.wav,s1,HELLO 42\\n")
>>> report = validate_manifest(path)
>>> report.ok, [p.message for p in report.errors]
(False, ["characters the tokenizer cannot encode: '2' '4'", 'audio file not found: $data_root/missing.wav'])
>>> print(report.format())  # doctest: +ELLIPSIS
/.../train.csv: 1 rows, 2 error(s) in 1 row(s), 0 note(s)
  row 1 (line 2, ID 'u1'): characters the tokenizer cannot encode: '2' '4'
      fix: normalise the text ...
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .audio import SAMPLE_RATE, AudioError, audio_info, read_audio
from .manifest_io import REQUIRED, Entry, read_manifest_raw

#: Characters a transcript may hold when no tokenizer is given, besides the letters of
#: :func:`default_unknown_chars`: apostrophe and space.
DEFAULT_CHARSET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")


def default_unknown_chars(text: str) -> set[str]:
    """Characters outside what :func:`asr_kd.data.text.normalise_text` produces.

    That is: upper-case (or caseless) letters of any script, accents included (``CAFÉ``),
    the apostrophe and the space. Lower case, digits and punctuation are reported.

    >>> sorted(default_unknown_chars("CAFÉ ÜBER DON'T x1!"))
    ['!', '1', 'x']
    """
    return {c for c in text if c not in DEFAULT_CHARSET and not (c.isalpha() and c.upper() == c)}


#: How far the manifest's duration may be from the audio's before it is called wrong (seconds).
DURATION_TOLERANCE = 0.1


@dataclass
class Problem:
    """One problem with one row (row 0: the whole file)."""

    row: int
    line: int
    id: str
    message: str
    fix: str
    severity: str = "error"  # or "note"

    def format(self) -> str:
        where = f"row {self.row} (line {self.line}" + (f", ID {self.id!r})" if self.id else ")") if self.row else "file"
        return f"  {where}: {self.message}\n      fix: {self.fix}" if self.fix else f"  {where}: {self.message}"


@dataclass
class Report:
    """Everything :func:`validate_manifest` found."""

    path: Path
    entries: list[Entry]
    problems: list[Problem] = field(default_factory=list)
    file_errors: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def notes(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "note"]

    @property
    def ok(self) -> bool:
        return not self.errors and not self.file_errors

    def rows_with_errors(self) -> set[int]:
        return {p.row for p in self.errors}

    def format(self, notes: bool = True) -> str:
        """The human report: a summary line, then file errors, then one block per problem."""
        n_err_rows = len(self.rows_with_errors())
        head = (
            f"{self.path}: {len(self.entries)} rows, {len(self.errors)} error(s) in {n_err_rows} row(s), "
            f"{len(self.notes)} note(s)"
            + (f", {len(self.file_errors)} problem(s) with the file as a whole" if self.file_errors else "")
        )
        lines = [head] + [f"  {e}" for e in self.file_errors]
        shown = sorted(self.problems if notes else self.errors, key=lambda p: (p.row, p.severity != "error"))
        lines += [p.format() if p.severity == "error" else p.format().replace(": ", ": note: ", 1) for p in shown]
        if self.ok:
            lines.append("  OK: every row can be used" + (" (see the notes)" if self.notes else ""))
        return "\n".join(lines)


def _good_duration(d: float | None) -> bool:
    return d is not None and math.isfinite(d) and d > 0


def _check_audio(e: Entry, sample_rate: int) -> list[tuple[str, str, str]]:
    """(severity, message, fix) for one row's audio."""
    out: list[tuple[str, str, str]] = []
    if not e.wav:
        return [("error", "the wav field is empty", "give the path of the audio file")]
    if not os.path.exists(e.wav):
        fix = (
            "correct the wav path ($data_root is the manifest's folder; other relative paths are taken "
            "from the current directory), or remove the row"
        )
        return [("error", f"audio file not found: {e.raw_wav or e.wav}", fix)]
    if os.path.isdir(e.wav):
        return [("error", f"wav names a folder, not a file: {e.wav}", "point wav at the audio file")]
    try:
        info = audio_info(e.wav)
    except AudioError as err:
        return [
            (
                "error",
                f"not an audio file that can be read: {err}",
                "replace the file with WAV/FLAC/OGG audio, or remove the row",
            )
        ]
    try:
        data, _ = read_audio(e.wav)
        frames = data.shape[0]
    except AudioError as err:
        return [("error", str(err), "re-create or re-copy the file (it is incomplete), or remove the row")]
    if frames == 0:
        return [("error", f"zero-length audio: {e.wav} holds no samples", "re-create the recording, or remove the row")]
    actual = frames / info.sample_rate
    if _good_duration(e.duration) and abs(e.duration - actual) > DURATION_TOLERANCE:
        out.append(
            (
                "error",
                f"wrong duration: the manifest says {e.duration:g} s, the audio lasts {actual:.3f} s",
                f"set duration to {actual:.3f}",
            )
        )
    if not _good_duration(e.duration):
        # the duration field itself is reported elsewhere; give the right value in the fix
        out.append(("hint", f"{actual:.3f}", ""))
    if info.sample_rate != sample_rate or info.channels != 1:
        what = []
        if info.sample_rate != sample_rate:
            what.append(f"{info.sample_rate} Hz, will be resampled to {sample_rate} Hz")
        if info.channels != 1:
            what.append(f"{info.channels} channels, will be downmixed to mono")
        out.append(("note", "; ".join(what) + " on load", ""))
    return out


def validate_manifest(
    path: str | os.PathLike,
    tokenizer=None,
    data_root: str | os.PathLike | None = None,
    check_audio: bool = True,
    sample_rate: int = SAMPLE_RATE,
    progress: Callable | None = None,
) -> Report:
    """Check every row of a CSV/JSONL manifest; never raises on bad content.

    Args:
        path: the manifest.
        tokenizer: anything with ``unknown_chars(text) -> set[str]`` (see
            :mod:`asr_kd.data.tokenizer`); ``None`` checks with :func:`default_unknown_chars`
            (upper-case letters of any script, apostrophe, space).
        data_root: replaces ``$data_root`` in wav paths (default: the manifest's folder).
        check_audio: open and decode every audio file.
        sample_rate: the rate audio is resampled to on load (for the notes).
        progress: wraps the row iterator (e.g. ``tqdm``), or ``None``.
    """
    raw = read_manifest_raw(path, data_root)
    report = Report(Path(path), raw.entries, file_errors=list(raw.file_errors))
    if not raw.entries and not report.file_errors:
        report.file_errors.append(
            f"{path}: no rows (only a header, or nothing); a manifest needs at least one utterance"
        )
    if not raw.entries or any(c not in raw.columns for c in REQUIRED):
        return report  # the file-level error says it all; no point in checking rows
    add = report.problems.append
    first_row: dict[str, int] = {}
    for e in raw.entries:

        def p(msg: str, fix: str, sev: str = "error", e: Entry = e) -> None:
            add(Problem(e.row, e.line, e.id, msg, fix, sev))

        if e.parse_error:
            p(e.parse_error, 'quote fields that contain commas ("a, b"), or add the missing fields')
        if not e.id:
            p("empty ID", "give every row a unique ID")
        elif e.id in first_row:
            p(
                f"duplicate ID {e.id!r} (first used in row {first_row[e.id]})",
                "make IDs unique, e.g. append the speaker or a counter",
            )
        else:
            first_row[e.id] = e.row
        if not e.spk_id:
            p("empty spk_id", "give the speaker (any label; splits are made speaker-disjoint with it)")
        if e.bad_utf8:
            p("the row is not valid UTF-8 text", "re-save the manifest as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
        if not e.wrd.strip():
            p("empty transcript (wrd)", "write the transcript, or remove the row")
        elif not e.bad_utf8:
            bad = tokenizer.unknown_chars(e.wrd) if tokenizer is not None else default_unknown_chars(e.wrd)
            if bad:
                shown = " ".join(repr(c) for c in sorted(bad))
                if tokenizer is not None:
                    fix = (
                        "normalise the text (asr-kd prepare csv ... normalises case, punctuation and digits) "
                        "or train the tokenizer on text that has these characters"
                    )
                else:
                    fix = (
                        "normalise the text (asr-kd prepare csv ... upper-cases it, spells digits, removes "
                        "punctuation), or pass --tokenizer with a tokenizer trained on this text"
                    )
                p(f"characters the tokenizer cannot encode: {shown}", fix)
        if e.duration is None:
            p(f"duration {e.raw_duration!r} is not a number", "write the duration in seconds")
        elif not math.isfinite(e.duration):
            p(f"duration {e.raw_duration!r} is not a finite number", "write the duration in seconds")
        elif e.duration <= 0:
            p(f"non-positive duration {e.raw_duration}", "write the duration in seconds")

    if check_audio:
        rows = raw.entries
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = pool.map(lambda e: _check_audio(e, sample_rate), rows)
            if progress is not None:
                results = progress(results, total=len(rows), desc="checking audio", unit="file")
            for found, e in zip(results, rows, strict=True):
                hint = next((m for s, m, _ in found if s == "hint"), None)
                for sev, msg, fix in found:
                    if sev != "hint":
                        add(Problem(e.row, e.line, e.id, msg, fix, sev))
                if hint is not None:
                    for prob in report.problems:
                        if (
                            prob.row == e.row
                            and "duration" in prob.message
                            and prob.fix.startswith("write the duration")
                        ):
                            prob.fix = f"set duration to {hint} (the audio's length in seconds)"
    report.problems.sort(key=lambda q: (q.row, q.severity != "error"))
    return report
