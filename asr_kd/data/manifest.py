"""Manifests for training: read one and refuse (or skip) the rows that cannot be used.

The file format and its plain reading and writing live in :mod:`asr_kd.data.manifest_io`
(re-exported here: ``Entry``, ``REQUIRED``, ``ManifestError``, ``read_manifest``,
``read_manifest_raw``, ``write_manifest``, ``manifest_format``); the row checks live in
:mod:`asr_kd.data.validate`. :func:`load_manifest` joins the two: it validates every row and
refuses a manifest with errors unless ``skip_bad=True``, in which case it logs what it skipped.
The imports go one way: ``manifest_io`` <- ``validate`` <- ``manifest``.

Example
-------
>>> import tempfile, os
>>> import numpy as np
>>> from asr_kd.data.audio import write_audio
>>> from asr_kd.data.manifest import Entry, write_manifest, load_manifest
>>> folder = tempfile.mkdtemp()
>>> write_audio(os.path.join(folder, "u1.wav"), np.zeros(8000, dtype=np.float32), 16000)
>>> write_manifest(os.path.join(folder, "train.csv"), [Entry("u1", 0.5, "$data_root/u1.wav", "spk1", "HELLO")])
>>> [e.id for e in load_manifest(os.path.join(folder, "train.csv"))]
['u1']
"""

from __future__ import annotations

import logging
import os

from .manifest_io import (
    REQUIRED,
    Entry,
    ManifestError,
    RawManifest,
    manifest_format,
    read_manifest,
    read_manifest_raw,
    write_manifest,
)
from .validate import validate_manifest

__all__ = [
    "REQUIRED",
    "Entry",
    "ManifestError",
    "RawManifest",
    "load_manifest",
    "manifest_format",
    "read_manifest",
    "read_manifest_raw",
    "write_manifest",
]

log = logging.getLogger(__name__)


def load_manifest(
    path: str | os.PathLike,
    skip_bad: bool = False,
    tokenizer=None,
    data_root: str | os.PathLike | None = None,
    check_audio: bool = True,
) -> list[Entry]:
    """Read and validate a manifest for training.

    Args:
        path: CSV or JSONL manifest.
        skip_bad: drop rows with errors (and log them as a warning) instead of refusing the manifest.
        tokenizer: anything with ``unknown_chars(text) -> set``; characters it cannot encode
            are errors. ``None`` checks against the project's default English character set.
        data_root: replaces ``$data_root`` (default: the manifest's folder).
        check_audio: open every audio file (slow for big corpora, but finds broken files).

    Raises:
        ManifestError: the manifest has errors and ``skip_bad`` is false, or nothing is left.
    """
    report = validate_manifest(path, tokenizer=tokenizer, data_root=data_root, check_audio=check_audio)
    if report.file_errors:  # each names the file and the fix already
        raise ManifestError("; ".join(report.file_errors))
    if report.errors and not skip_bad:
        raise ManifestError(
            report.format() + "\nFix these rows, or call load_manifest(..., skip_bad=True) to train without them."
        )
    bad_rows = {p.row for p in report.errors}
    kept = [e for e in report.entries if e.row not in bad_rows]
    if bad_rows:
        log.warning(
            f"{path}: skipped {len(bad_rows)} bad row(s) of {len(report.entries)}:\n" + report.format(notes=False)
        )
    if not kept:
        raise ManifestError(f"{path}: no usable rows left; fix the problems listed above")
    return kept
