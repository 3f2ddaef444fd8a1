"""Extra English voices from Festival (Debian package ``festival`` plus ``festvox-*`` voices).

Festival is asked which voices it has (its ``voice-locations``); those installed in an English
voice folder (``voices/english``, ``voices/us``, ``voices/uk``) are used. Each utterance is one
``text2wave`` call with the voice selected by ``-eval "(voice_NAME)"``, written at 16 kHz.

Speaking rate and pitch: diphone and cluster-unit voices stretch their durations
(``Duration_Stretch``) and move their mean F0 (``int_lr_params``); HTS voices (such as
``cmu_us_slt_arctic_hts``) change their speed (hts_engine ``-r``) and keep their own pitch.

Festival crashes (segmentation fault) on some input, e.g. text that starts with a run of
punctuation (``-- hello``, ``... hello``) or has no Latin letter at all, so the text is
cleaned first: leading characters up to the first ASCII letter or digit are dropped, and
text without one is refused with :class:`FestivalError`.

Example
-------
>>> from asr_kd.data.festival import festival_synth, speakable
>>> speakable("-- ... hello,   world"), speakable("!!!")   # festival crashes on the text before
('hello, world', '')
>>> wav, sr = festival_synth("hello world", "kal_diphone", rate=170, pitch=50)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
#: Voice folders (``.../festival/voices/LANGUAGE/NAME``) that hold English voices.
ENGLISH_DIRS = ("english", "us", "uk", "british", "american")
#: What to install: the command, and English voices that Debian packages.
APT_FESTIVAL = "festival"
APT_VOICES = "festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"

_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_FIRST_WORD = re.compile(r"[A-Za-z0-9]")


class FestivalError(RuntimeError):
    """Festival is missing, has no such voice, or failed on a text."""


def _installed() -> str | None:
    """The text2wave command when festival (which ships it) is installed, else None."""
    if shutil.which("festival") is None:
        return None
    return shutil.which("text2wave")


@functools.lru_cache(maxsize=4)
def _voice_locations(festival: str) -> tuple[tuple[str, str], ...]:
    """(name, folder) of every voice festival knows, asked from festival itself."""
    query = '(mapcar (lambda (v) (format t "%s\\t%s\\n" (car v) (cdr v))) voice-locations)\n'
    try:
        res = subprocess.run([festival, "--pipe"], input=query.encode(), capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ()
    out = []
    for line in res.stdout.decode("utf-8", "replace").splitlines():
        name, sep, folder = line.partition("\t")
        if sep and _NAME.match(name.strip()):
            out.append((name.strip(), folder.strip()))
    return tuple(sorted(out))


def festival_english_voices() -> list[str]:
    """Names of the installed English festival voices (e.g. ``kal_diphone``), sorted; [] without festival."""
    if _installed() is None:
        return []
    festival = shutil.which("festival")
    return [
        name
        for name, folder in _voice_locations(festival)
        if Path(folder.rstrip("/")).parent.name.lower() in ENGLISH_DIRS
    ]


def festival_voices() -> list[str]:
    """``festival+NAME`` for each installed English festival voice, or [] when festival is missing."""
    return [f"festival+{v}" for v in festival_english_voices()]


def festival_missing() -> str:
    """Why :func:`festival_voices` is empty, with the fix ("" when it is not)."""
    if shutil.which("festival") is None or shutil.which("text2wave") is None:
        return f"the festival command is not installed (apt-get install {APT_FESTIVAL} {APT_VOICES})"
    if not festival_english_voices():
        return f"festival has no English voice installed (apt-get install {APT_VOICES})"
    return ""


def speakable(text: str) -> str:
    """``text`` from its first ASCII letter or digit on ("" when it has none)."""
    m = _FIRST_WORD.search(text)
    return " ".join(text[m.start() :].split()) if m else ""


def festival_synth(text: str, voice: str, rate: int = 170, pitch: int = 50) -> tuple[np.ndarray, int]:
    """Speak ``text`` with a festival voice; return (int16 samples, 16000).

    Args:
        text: what to say (cleaned with :func:`speakable`; refused if nothing is left).
        voice: a festival voice name, e.g. ``kal_diphone`` (see :func:`festival_english_voices`).
        rate: words per minute, 170 = the voice's normal speed.
        pitch: 0-100, 50 = the voice's own mean F0 (0 -> x0.7, 100 -> x1.3; not for HTS voices).

    Raises:
        FestivalError: festival is missing, the voice is unknown, the text has nothing to say
            or festival failed; the message names the voice and the fix.
    """
    text2wave = _installed()
    if text2wave is None:
        raise FestivalError(f"festival voice {voice!r}: {festival_missing()}")
    if not _NAME.match(voice):
        raise FestivalError(f"festival voice {voice!r}: not a voice name (letters, digits and _ only)")
    spoken = speakable(text)
    if not spoken:
        raise FestivalError(
            f"festival voice {voice!r} cannot speak {text[:40]!r}: it has no ASCII letter or "
            "digit (festival crashes on such text); remove that line or use --extra-voices no"
        )
    stretch = 170.0 / max(60, int(rate))
    f0_scale = 0.7 + 0.006 * int(pitch)
    setup = [
        f"(voice_{voice})",
        f"(Parameter.set 'Duration_Stretch (* {stretch:.4f} (or (Parameter.get 'Duration_Stretch) 1.0)))",
        # diphone / clunits voices: scale the target mean F0 (the first entry of an alist wins)
        "(if (and (symbol-bound? 'int_lr_params) (assoc 'target_f0_mean int_lr_params))"
        f" (set! int_lr_params (cons (list 'target_f0_mean (* {f0_scale:.4f}"
        " (car (cdr (assoc 'target_f0_mean int_lr_params))))) int_lr_params)))",
        # HTS voices: speed factor
        "(if (symbol-bound? 'hts_engine_params)"
        f' (set! hts_engine_params (append hts_engine_params (list (list "-r" {1.0 / stretch:.4f})))))',
    ]
    fd, path = tempfile.mkstemp(suffix=".wav")
    os.close(fd)
    cmd = [text2wave, "-F", str(SAMPLE_RATE), "-o", path]
    for expr in setup:
        cmd += ["-eval", expr]
    try:
        res = subprocess.run(cmd, input=(spoken + "\n").encode("utf-8"), capture_output=True, timeout=120)
        err = res.stderr.decode("utf-8", "replace").strip()
        if res.returncode != 0 or "SIOD ERROR" in err or os.path.getsize(path) == 0:
            if "voice_" in err and "unbound" in err:
                raise FestivalError(
                    f"festival has no voice {voice!r}; installed English voices: "
                    f"{', '.join(festival_english_voices()) or 'none'} (apt-get install {APT_VOICES})"
                )
            why = f"exit code {res.returncode}" + (" (crashed)" if res.returncode < 0 or res.returncode == 139 else "")
            raise FestivalError(f"festival voice {voice!r} failed on {spoken[:40]!r}: {why}: {err[-300:]}")
        wav, sr = sf.read(path, dtype="int16")
    except (OSError, subprocess.SubprocessError, RuntimeError) as err:
        if isinstance(err, FestivalError):
            raise
        raise FestivalError(f"festival voice {voice!r} failed on {spoken[:40]!r}: {err}") from err
    finally:
        os.unlink(path)
    if wav.ndim > 1:
        wav = wav[:, 0]
    return wav, sr
