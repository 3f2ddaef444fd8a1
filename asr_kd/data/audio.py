"""Audio I/O: read any file soundfile understands as 16 kHz mono, write files atomically.

Audio at another sample rate is resampled (``torchaudio.functional.resample``) and
multi-channel audio is averaged to mono on load, so a manifest can mix formats.

Example
-------
>>> import numpy as np, tempfile, os
>>> from asr_kd.data.audio import write_audio, load_audio
>>> path = os.path.join(tempfile.mkdtemp(), "a.wav")
>>> write_audio(path, np.zeros((22050, 2), dtype=np.float32), 22050)   # 1 s stereo at 22.05 kHz
>>> load_audio(path).shape                                              # 1 s mono at 16 kHz
torch.Size([16000])
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.transforms as T

from ..errors import UserError
from ..io import write_atomic

#: The sample rate every model in the project sees.
SAMPLE_RATE = 16000

_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}


class AudioError(UserError, ValueError):
    """An audio file is missing, unreadable, truncated or empty. The message names the file."""


@dataclass(frozen=True)
class AudioInfo:
    """What the file header says."""

    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Header of ``path`` (no samples read). Raises :class:`AudioError` if it is not audio."""
    try:
        info = sf.info(str(path))
    except FileNotFoundError as err:
        raise AudioError(f"{path}: file not found") from err
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AudioError(f"{path}: not a readable audio file ({err})") from err
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames))


def _wav_shortfall(path: str | os.PathLike) -> tuple[int, int] | None:
    """For a RIFF/WAVE file whose data chunk is cut short: (bytes declared, bytes present).

    libsndfile quietly shrinks the frame count of a truncated WAV to what is there, so the
    header is checked here directly.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size = os.fstat(f.fileno()).st_size
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, clen = chunk[:4], int.from_bytes(chunk[4:], "little")
            if cid == b"data":
                present = size - f.tell()
                return (clen, present) if clen != 0xFFFFFFFF and present < clen else None
            f.seek(clen + (clen & 1), 1)


def check_audio(path: str | os.PathLike) -> AudioInfo:
    """Header of ``path``, refusing what cannot be trained on without decoding the samples.

    Raises :class:`AudioError` naming the file and the problem: not found, not readable audio,
    a truncated WAV (its data chunk is shorter than the header declares) or zero-length audio
    (a valid header with no samples).

    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "empty.wav")
    >>> write_audio(path, np.zeros(0, dtype=np.float32), 16000)
    >>> check_audio(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    asr_kd.data.audio.AudioError: .../empty.wav: zero-length audio (the header is valid but holds no samples)
    """
    if os.path.isdir(path):
        raise AudioError(f"{path}: a folder, not an audio file")
    info = audio_info(path)
    short = _wav_shortfall(path)
    if short:
        raise AudioError(
            f"{path}: truncated: the WAV header declares {short[0]} bytes of audio, the file holds {short[1]}"
        )
    if info.frames == 0:
        raise AudioError(f"{path}: zero-length audio (the header is valid but holds no samples)")
    return info


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """All samples of ``path`` as float32 ``(frames, channels)`` and the file's sample rate.

    Raises :class:`AudioError` when the file is unreadable or holds fewer samples than its
    header promises (a truncated file).
    """
    info = audio_info(path)
    short = _wav_shortfall(path)
    if short:
        raise AudioError(
            f"{path}: truncated: the WAV header declares {short[0]} bytes of audio, the file holds {short[1]}"
        )
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AudioError(f"{path}: audio data cannot be decoded, the file is probably truncated ({err})") from err
    if data.shape[0] < info.frames:
        raise AudioError(f"{path}: truncated: header says {info.frames} samples, file holds {data.shape[0]}")
    return data, sr


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Samples of ``path`` as a 1-D float32 tensor, downmixed to mono and resampled to ``sample_rate``."""
    data, sr = read_audio(path)
    wav = torch.from_numpy(data).mean(dim=1) if data.shape[1] > 1 else torch.from_numpy(data[:, 0].copy())
    if sr != sample_rate:
        with torch.no_grad():
            wav = _resampler(sr, sample_rate)(wav)
    return wav


def collate_audio(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad 1-D waveforms to one ``(B, T)`` batch with zeros; return it and the lengths in samples.

    >>> wavs, lengths = collate_audio([torch.ones(3), torch.ones(5)])
    >>> wavs.shape, lengths.tolist()
    (torch.Size([2, 5]), [3, 5])
    """
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    out = torch.zeros(len(waves), int(lengths.max()) if len(waves) else 0)
    for i, w in enumerate(waves):
        out[i, : len(w)] = w
    return out, lengths


@lru_cache(maxsize=8)
def _resampler(orig_sr: int, new_sr: int) -> T.Resample:
    return T.Resample(orig_sr, new_sr)  # the sinc kernel is computed once


def resample(samples: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Resample a 1-D float array (torchaudio's windowed-sinc resampler, same as ``functional.resample``)."""
    if orig_sr == new_sr:
        return samples.astype(np.float32, copy=False)
    with torch.no_grad():
        return _resampler(orig_sr, new_sr)(torch.from_numpy(samples.astype(np.float32, copy=False))).numpy()


def write_audio(path: str | os.PathLike, samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write ``samples`` (frames or frames x channels) to ``path`` atomically (:func:`asr_kd.io.write_atomic`).

    The format follows the extension (.wav, .flac, .ogg).
    """
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: cannot write audio with extension {path.suffix!r}; use .wav or .flac")
    buf = io.BytesIO()  # encoding in memory is ~10x faster than libsndfile writing to a file
    sf.write(buf, samples, sample_rate, format=fmt, subtype="VORBIS" if fmt == "OGG" else subtype)
    write_atomic(path, lambda tmp: tmp.write_bytes(buf.getvalue()))
