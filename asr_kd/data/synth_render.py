"""Rendering the synthetic corpus: one planned utterance (:class:`Job`) -> one 16 kHz WAV file.

An utterance is spoken by espeak-ng, flite or festival (by the voice's prefix), resampled to
16 kHz, scaled by its gain, optionally reverberated (an exponentially decaying noise impulse
response) and mixed with slightly coloured noise at its SNR, then written as 16-bit PCM.
Everything random comes from the job's ``noise_seed``, so a job gives the same bytes wherever
it runs. espeak-ng keeps internal state between utterances (its output depends on what was
spoken before, even after ``espeak_Terminate``), so every chunk of :data:`CHUNK` jobs is
rendered by a freshly loaded private copy of the library (:func:`render_chunks`): the bytes
depend neither on the number of processes nor on what a process did before.

Example
-------
>>> import numpy as np
>>> x = np.sin(np.arange(1600) / 5.0)
>>> y = reverb(x, 0.2, np.random.default_rng(0), 16000)
>>> y.shape, bool(np.isclose(np.abs(y).max(), np.abs(x).max()))
((1600,), True)
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE, resample, write_audio
from .espeak import Espeak
from .festival import festival_synth
from .flite import flite_synth

#: Utterances rendered per worker process (each chunk gets a fresh espeak-ng).
CHUNK = 16


@dataclass(frozen=True)
class Job:
    """One utterance as planned: who says what, how, with which noise, to which file."""

    index: int
    split: str
    voice: str
    spoken: str
    text: str
    rate: int
    pitch: int
    prange: int
    gain: float
    snr: float | None
    rt60: float | None
    noise_seed: int
    path: str


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def reverb(x: np.ndarray, rt60: float, rng: np.random.Generator, sr: int) -> np.ndarray:
    """``x`` through a synthetic room: decaying noise reaching -60 dB at ``rt60`` s; peak level kept."""
    n = int(rt60 * sr)
    t = np.arange(n) / sr
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    ir[0] = 1.0 / max(1e-3, 0.3)  # direct path dominates
    ir /= np.sqrt(np.sum(ir**2))
    m = len(x) + n - 1
    size = 1 << (m - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)[: len(x)]
    return y * (np.max(np.abs(x)) / max(1e-9, np.max(np.abs(y))))


def render(job: Job, tts: Espeak) -> tuple[int, float]:
    """Synthesise one utterance to ``job.path``; returns (index, duration in seconds)."""
    if job.voice.startswith("flite+"):
        wav, sr = flite_synth(job.spoken, job.voice.split("+", 1)[1], rate=job.rate, pitch=job.pitch)
    elif job.voice.startswith("festival+"):
        wav, sr = festival_synth(job.spoken, job.voice.split("+", 1)[1], rate=job.rate, pitch=job.pitch)
    else:
        wav, sr = tts.synth(
            job.spoken, voice=job.voice, rate=job.rate, pitch=job.pitch, pitch_range=job.prange, seed=job.noise_seed
        )
    x = resample(wav.astype(np.float32) / 32768.0, sr, SAMPLE_RATE)
    x *= job.gain
    rng = np.random.default_rng(job.noise_seed)
    if job.rt60:
        x = reverb(x, job.rt60, rng, SAMPLE_RATE)
    if job.snr is not None:
        power = float(np.mean(x**2)) or 1e-8
        noise = rng.standard_normal(len(x))
        noise = np.convolve(noise, [0.5, 0.3, 0.2], mode="same")  # slightly coloured
        noise *= np.sqrt(power / (10 ** (job.snr / 10)) / max(1e-12, float(np.mean(noise**2))))
        x = x + noise
    x = np.clip(x, -1.0, 1.0)
    pcm = np.round(x * 32767).astype(np.int16)
    write_audio(job.path, pcm, SAMPLE_RATE)
    return job.index, len(pcm) / SAMPLE_RATE


def render_chunk(chunk: list[Job]) -> list[tuple[str, int, float]]:
    """Render a chunk with a private, freshly loaded copy of libespeak-ng; ``(split, index, seconds)`` each."""
    with Espeak(private=True) as tts:
        return [(j.split, *render(j, tts)) for j in chunk]


def render_chunks(chunks: list[list[Job]], jobs: int, done: Callable[[list[tuple[str, int, float]]], None]) -> None:
    """Render every chunk, in ``jobs`` worker processes when there is more than one; ``done(results)`` per chunk."""
    if jobs > 1 and len(chunks) > 1:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(min(jobs, len(chunks)), initializer=_init_worker) as pool:
            for results in pool.imap(render_chunk, chunks):
                done(results)
    else:
        for chunk in chunks:
            done(render_chunk(chunk))
