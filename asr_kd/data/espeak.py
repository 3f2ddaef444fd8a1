"""English speech from libespeak-ng (the pip package ``espeakng-loader``), through ctypes.

No apt package and no command line: the library is loaded once per process and used
in synchronous mode, with a callback that collects the 16-bit samples (22,050 Hz).
Text goes in as a UTF-8 string, so text starting with "-" is not read as an option.

Example
-------
>>> from asr_kd.data.espeak import Espeak
>>> tts = Espeak()                                         # doctest: +SKIP
>>> wav, sr = tts.synth("hello world", voice="en-us+f3", rate=170, pitch=50)  # doctest: +SKIP
>>> sr, wav.dtype                                          # doctest: +SKIP
(22050, dtype('int16'))
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

# espeak_ng enums (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4

#: English accents shipped with espeak-ng 1.52 (language names accepted by SetVoiceByName).
ACCENTS: tuple[str, ...] = (
    "en-us",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
#: Voice variants ("+name") that sound clearly different and stay intelligible.
VARIANTS: tuple[str, ...] = tuple(
    (
        "m1 m2 m3 m4 m5 m6 m7 f1 f2 f3 f4 f5 klatt klatt2 klatt3 klatt4 Andy Annie aunty boris david ed "
        "grandpa iven john linda max michel norbert paul quincy rob robert steph travis victor zac adam "
        "Alex Lee"
    ).split()
)

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _libc_srand(seed: int) -> None:
    """espeak-ng also draws from libc's rand(); seed it too (no-op where there is no libc)."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(None)
        except OSError:  # pragma: no cover
            _LIBC = False
    if isinstance(_LIBC, ctypes.CDLL):
        _LIBC.srand(ctypes.c_uint(seed))


_LIBC: ctypes.CDLL | bool | None = None


class EspeakError(RuntimeError):
    """libespeak-ng could not be loaded or refused a request."""


def _load(library: str, data: str) -> ctypes.CDLL:
    """Load and initialise one copy of libespeak-ng (synchronous mode)."""
    try:
        lib = ctypes.CDLL(library)
    except OSError as err:
        raise EspeakError(f"cannot load {library}: {err}") from err
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(Path(data).parent).encode(), 0)
    if sr <= 0:  # older loaders expect the data folder itself
        sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data).encode(), 0)
    if sr <= 0:
        raise EspeakError(f"espeak_Initialize failed (data at {data})")
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    if hasattr(lib, "espeak_ng_SetRandSeed"):
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    Espeak.sample_rate = sr
    return lib


class Espeak:
    """libespeak-ng in synchronous mode.

    libespeak-ng keeps state between utterances (its output depends on what the process spoke
    before, even after ``espeak_Terminate``). ``private=True`` loads a private copy of the
    library (a temporary copy of the .so, so its state starts fresh); :meth:`close` unloads
    it. The default shares one instance per process.

    Args:
        private: load a fresh private copy (use as a context manager).
        library: path to libespeak-ng (default: the one shipped by espeakng-loader).
        data: path to espeak-ng-data (default: the one shipped by espeakng-loader).
    """

    _shared_lib: ctypes.CDLL | None = None
    sample_rate: int = 22050

    def __init__(self, private: bool = False, library: str | None = None, data: str | None = None) -> None:
        self._tmpdir: str | None = None
        self._lib: ctypes.CDLL | None
        if private or Espeak._shared_lib is None:
            try:
                import espeakng_loader
            except ImportError as err:  # pragma: no cover - dependency of the project
                raise EspeakError("espeakng-loader is not installed: pip install espeakng-loader") from err
            library = library or espeakng_loader.get_library_path()
            data = data or espeakng_loader.get_data_path()
            if private:
                self._tmpdir = tempfile.mkdtemp(prefix="espeak_")
                copy = os.path.join(self._tmpdir, os.path.basename(library))
                shutil.copyfile(library, copy)
                library = copy
            lib = _load(library, data)
            if not private:
                Espeak._shared_lib = lib
            self._lib = lib
        else:
            self._lib = Espeak._shared_lib
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, _events):
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._cb = _CALLBACK(collect)  # keep a reference: ctypes callbacks must outlive their use

    def close(self) -> None:
        """Unload a private copy (no-op for the shared instance)."""
        if self._tmpdir is None or self._lib is None:
            return
        import _ctypes

        self._lib.espeak_Terminate()
        try:
            _ctypes.dlclose(self._lib._handle)
        except (OSError, AttributeError):  # pragma: no cover - non-POSIX
            pass
        self._lib = None
        shutil.rmtree(self._tmpdir, ignore_errors=True)
        self._tmpdir = None

    def __enter__(self) -> Espeak:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def synth(
        self,
        text: str,
        voice: str = "en-us",
        rate: int = 170,
        pitch: int = 50,
        pitch_range: int = 50,
        seed: int = 0,
    ) -> tuple[np.ndarray, int]:
        """Speak ``text`` with ``voice`` ("accent" or "accent+variant"); return (int16 samples, rate).

        ``rate`` is in words per minute (80-450), ``pitch`` and ``pitch_range`` in 0-100.
        ``seed`` seeds espeak-ng's random numbers (voice jitter): the same arguments give the
        same samples whatever was spoken before.
        """
        lib = self._lib
        if lib is None:
            raise EspeakError("this private copy of espeak-ng was closed; make a new Espeak()")
        if hasattr(lib, "espeak_ng_SetRandSeed"):
            lib.espeak_ng_SetRandSeed(int(seed) & 0x7FFFFFFF)
        _libc_srand(int(seed) & 0x7FFFFFFF)
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"espeak-ng has no voice {voice!r}; use one of the accents {', '.join(ACCENTS)}")
        lib.espeak_SetParameter(_RATE, int(rate), 0)
        lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        lib.espeak_SetParameter(_RANGE, int(pitch_range), 0)
        lib.espeak_SetSynthCallback(self._cb)
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data, len(data))
        err = lib.espeak_Synth(buf, len(data), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
        if err != 0:
            raise EspeakError(f"espeak_Synth failed with code {err} for text {text[:40]!r}")
        lib.espeak_Synchronize()
        wav = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        self._chunks = []
        return wav.astype(np.int16, copy=False), Espeak.sample_rate


def available_voices(accents: tuple[str, ...] = ACCENTS, variants: tuple[str, ...] = VARIANTS) -> list[str]:
    """Every ``accent+variant`` voice name whose variant file exists in the shipped data."""
    try:
        import espeakng_loader

        vdir = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
        present = set(os.listdir(vdir))
    except Exception:  # pragma: no cover
        present = set(variants)
    return [f"{a}+{v}" for a in accents for v in variants if v in present]
