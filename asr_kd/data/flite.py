"""Extra English voices from the ``flite`` command (Debian package ``flite``), used when installed.

Each utterance is one ``flite`` call. Text is cleaned as for festival
(:func:`~asr_kd.data.festival.speakable`): from its first ASCII letter or digit on, so it is
never read as an option; text without one (flite would say nothing) is refused.

Example
-------
>>> from asr_kd.data.flite import FLITE_VOICES, flite_synth
>>> sorted(FLITE_VOICES)               # flite_voices() lists them when the command is installed
['awb', 'kal16', 'rms', 'slt']
>>> wav, sr = flite_synth("hello world", "slt", rate=170, pitch=50)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import numpy as np
import soundfile as sf

from .festival import speakable

#: What to install for the flite voices.
APT_FLITE = "flite"
#: 16 kHz flite voices and a typical mean F0 (Hz) for each.
FLITE_VOICES: dict[str, float] = {"kal16": 105.0, "awb": 110.0, "rms": 100.0, "slt": 165.0}


class FliteError(RuntimeError):
    """flite is missing or failed on a text."""


def flite_voices() -> list[str]:
    """``flite+NAME`` for each 16 kHz flite voice, or [] when the flite command is missing."""
    return [f"flite+{v}" for v in FLITE_VOICES] if shutil.which("flite") else []


def flite_missing() -> str:
    """Why :func:`flite_voices` is empty, with the fix ("" when it is not)."""
    return "" if shutil.which("flite") else f"the flite command is not installed (apt-get install {APT_FLITE})"


def flite_synth(text: str, voice: str, rate: int = 170, pitch: int = 50) -> tuple[np.ndarray, int]:
    """Speak ``text`` with a flite voice; ``rate`` in words/min (170 = normal), ``pitch`` 0-100 (50 = normal).

    Raises:
        FliteError: flite is missing or failed, or the text has nothing to say; the message
            names the voice and the fix.
    """
    if not shutil.which("flite"):
        raise FliteError(f"flite voice {voice!r}: {flite_missing()}")
    spoken = speakable(text)  # never starts with "-", so the command line cannot read it as an option
    if not spoken:
        raise FliteError(
            f"flite voice {voice!r} cannot speak {text[:40]!r}: it has no ASCII letter or digit "
            "(flite would say nothing); remove that line or use --extra-voices no"
        )
    text = spoken
    stretch = 170.0 / max(60, rate)
    f0 = FLITE_VOICES.get(voice, 120.0) * (0.7 + 0.006 * pitch)
    fd, path = tempfile.mkstemp(suffix=".wav")
    os.close(fd)
    try:
        subprocess.run(
            [
                "flite",
                "-voice",
                voice,
                "--setf",
                f"duration_stretch={stretch:.3f}",
                "--setf",
                f"int_f0_target_mean={f0:.1f}",
                "-t",
                text,
                "-o",
                path,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        wav, sr = sf.read(path, dtype="int16")
    except (OSError, subprocess.SubprocessError, RuntimeError) as err:
        raise FliteError(f"flite voice {voice!r} failed on {text[:40]!r}: {err}") from err
    finally:
        os.unlink(path)
    return wav, sr
