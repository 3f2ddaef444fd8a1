"""What every corpus preparer shares: :class:`PrepareError`, the audio extensions, reading transcripts.

Transcripts are read as UTF-8 leniently (:func:`read_text_lenient`): bytes that are not UTF-8
become lone surrogates, so that :func:`not_utf8` can find the line and the preparer skip it by
name instead of failing on the whole file.

Example
-------
>>> from asr_kd.data.prepare_common import clean_text, not_utf8
>>> clean_text("Hello,  world 2!", normalise=True), clean_text("Hello,  world 2!", normalise=False)
('HELLO WORLD TWO', 'Hello, world 2!')
>>> not_utf8(b"caf\\xe9".decode("utf-8", errors="surrogateescape")), not_utf8("café")
(True, False)
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .text import normalise_text

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus")

#: Why a line that is not UTF-8 was skipped, with the fix.
NOT_UTF8 = "not UTF-8 text (e.g. latin-1); re-save the file as UTF-8 (iconv -f latin1 -t utf-8)"


class PrepareError(UserError, ValueError):
    """The source does not look like the corpus kind; the message says what was expected."""


def clean_text(text: str, normalise: bool) -> str:
    """The transcript as the manifest holds it: normalised, or only its white space collapsed."""
    return normalise_text(text) if normalise else " ".join(text.split())


def read_text_lenient(path: Path) -> str:
    """Read a text file as UTF-8; bytes that are not UTF-8 become lone surrogates (see :func:`not_utf8`)."""
    return path.read_bytes().decode("utf-8", errors="surrogateescape")


def not_utf8(*texts: str | None) -> bool:
    """True if any text holds bytes that were not UTF-8 (read with :func:`read_text_lenient`)."""
    return any(isinstance(t, str) and any("\udc80" <= c <= "\udcff" for c in t) for t in texts)
