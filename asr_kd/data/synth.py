"""The embedded corpus: English speech synthesised with espeak-ng, split by speaker.

A *speaker* is one espeak-ng voice, ``accent+variant`` (7 English accents x ~40 variants),
with its own speaking rate and pitch drawn from the seed; each utterance jitters both a
little. Splits are speaker-disjoint *by variant*: the variants used for test (and for
valid) are never used in training with any accent, so test voices are never heard in
training. Text comes from :class:`~asr_kd.data.sentences.SentenceGenerator` or from a text
file (one sentence per line). Optional additive noise at a random SNR and synthetic
reverberation (exponentially decaying noise impulse responses).

Extra voices: the four 16 kHz voices of the ``flite`` command and the English voices of
``festival`` join the pool when they are installed (``extra_voices="auto"``, the default;
``True`` requires both and fails naming the apt package to install; ``False`` uses espeak-ng
only, so the corpus a seed gives depends only on the pip packages). They split by the person
who recorded them (:func:`voice_speaker`): flite's kal16 and festival's kal_diphone are one
speaker and stay in one split; rms and ked are test speakers, awb a valid speaker. The
extra voices in the pool are part of the options, so the fingerprint changes with them.

Everything is derived from the seed: the same seed and options give the same bytes
(libespeak-ng keeps state between utterances, so each chunk of utterances is rendered by a
freshly loaded private copy of the library). A finished corpus is recognised by its
``synth.json`` stamp and not made again; a killed run resumes from its finished chunks.

Example
-------
>>> from asr_kd.data.synth import synthesize_corpus
>>> manifests = synthesize_corpus("data/synth_tiny", preset="tiny", seed=0)   # doctest: +SKIP
>>> sorted(manifests)                                                        # doctest: +SKIP
['test', 'train', 'valid']
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, audio_info, resample, write_audio
from .espeak import Espeak, available_voices
from .festival import festival_missing, festival_synth, festival_voices
from .flite import flite_missing, flite_synth, flite_voices
from .manifest import Entry, write_manifest
from .sentences import Sentence, SentenceGenerator
from .text import normalise_text

SPLITS = ("train", "valid", "test")
#: Utterances rendered per worker process (each chunk gets a fresh espeak-ng; see synthesize_corpus).
CHUNK = 16


@dataclass(frozen=True)
class Preset:
    """Utterances per split and speakers per split (``0`` = every speaker available)."""

    utterances: tuple[int, int, int]
    speakers: tuple[int, int, int]
    description: str


#: tiny: for tests, made in a few seconds. demo: the default ASR recipe (~1.4 h).
#: full: the benchmark corpus (~6 h, >= 5 h).
PRESETS: dict[str, Preset] = {
    "tiny": Preset((40, 10, 10), (8, 2, 2), "tests: ~3 min of audio, a few seconds to make"),
    "demo": Preset((1500, 100, 150), (0, 0, 0), "default ASR recipe: ~1.4 h of audio"),
    "full": Preset((6600, 300, 500), (0, 0, 0), "benchmark corpus: ~6 h of audio"),
}

#: Speakers held out of training: valid and test each get their own. An espeak-ng voice's
#: speaker is its variant; a flite/festival voice's is the person recorded (see voice_speaker).
TEST_VARIANTS = ("m3", "f4", "klatt3", "grandpa", "quincy", "steph", "rms", "ked")
VALID_VARIANTS = ("m6", "f2", "aunty", "max", "awb")
#: Prefixes of the voices that do not come from espeak-ng.
EXTRA_ENGINES = ("flite", "festival")
#: Festival voice names: [institution_language_]SPEAKER[_arctic][_method], e.g. cmu_us_slt_arctic_hts.
_EXTRA_NAME = re.compile(r"^(?:[a-z]+_[a-z]{2}_)?([a-z0-9]+?)(?:_arctic)?"
                         r"(?:_(?:diphone|mbrola|clunits|hts|cg|ldom|multisyn))*$")


@dataclass
class SynthOptions:
    """Everything that determines the corpus (stored in ``synth.json``)."""

    preset: str = "tiny"
    seed: int = 0
    utterances: tuple[int, int, int] = (40, 10, 10)
    speakers: tuple[int, int, int] = (8, 2, 2)
    text_file_sha1: str = ""
    noise_prob: float = 0.0
    snr_db: tuple[float, float] = (10.0, 30.0)
    reverb_prob: float = 0.0
    rt60: tuple[float, float] = (0.15, 0.6)
    sample_rate: int = SAMPLE_RATE
    voices: dict[str, list[str]] = field(default_factory=dict)
    #: the flite/festival voices in the pool (installed and not turned off), whether picked or not
    extra_voices: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        d = asdict(self)
        if not d["extra_voices"]:
            del d["extra_voices"]  # espeak-ng only: the same fingerprint as before extra voices existed
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def voice_speaker(voice: str) -> str:
    """The speaker behind a voice, the unit of the speaker-disjoint split.

    An espeak-ng voice's variant (``en-gb-x-rp+m3`` -> ``m3``: one variant is one speaker in
    every accent); for flite and festival, the person recorded, so that one person under two
    engines is one speaker: ``flite+kal16`` and ``festival+kal_diphone`` -> ``kal``,
    ``festival+cmu_us_slt_arctic_hts`` -> ``slt``, ``festival+cmu_us_awb_cg`` -> ``awb``.
    """
    engine, _, name = voice.partition("+")
    if engine not in EXTRA_ENGINES:
        return name
    name = name.lower()
    m = _EXTRA_NAME.match(name)
    name = m.group(1) if m else name
    return re.sub(r"(?<=[a-z])(8|16|22|32|48)k?$", "", name)  # flite's kal16 is kal


def _extra_mode(extra_voices: bool | str) -> str:
    """``"auto"``, ``"yes"`` or ``"no"`` from True/False/"auto"/"yes"/"no" (YAML gives any of these)."""
    if extra_voices is True or extra_voices is False:
        return "yes" if extra_voices else "no"
    mode = str(extra_voices).strip().lower()
    mode = {"true": "yes", "false": "no", "on": "yes", "off": "no"}.get(mode, mode)
    if mode not in ("auto", "yes", "no"):
        raise ValueError(f"extra_voices must be 'auto', True ('yes') or False ('no'), got {extra_voices!r}")
    return mode


def extra_voice_pool(extra_voices: bool | str = "auto") -> list[str]:
    """The flite and festival voices to add: installed ones for ``"auto"``, none for False.

    True requires both engines and raises ``ValueError`` naming what is missing and the apt
    package that installs it.
    """
    mode = _extra_mode(extra_voices)
    if mode == "no":
        return []
    fl, fe = flite_voices(), festival_voices()
    if mode == "yes":
        missing = [why for why in (flite_missing() if not fl else "", festival_missing() if not fe else "") if why]
        if missing:
            raise ValueError("extra voices asked for (--extra-voices yes / extra_voices=True), but "
                             + "; ".join(missing) + ". Install them, or use --extra-voices auto (those installed) "
                             "or --extra-voices no (espeak-ng only)")
    return fl + fe


def split_voices(seed: int = 0, voices: list[str] | None = None,
                 extra_voices: bool | str = False) -> dict[str, list[str]]:
    """Partition voices into train/valid/test, disjoint by speaker (:func:`voice_speaker`).

    Args:
        seed: orders the voices of each split.
        voices: the pool (default: every espeak-ng ``accent+variant`` voice, plus the extra voices).
        extra_voices: which flite/festival voices join the default pool (see :func:`extra_voice_pool`);
            False here, so that ``split_voices(seed)`` is the same on every machine.
    """
    if voices is None:
        voices = available_voices() + extra_voice_pool(extra_voices)
    out = {"train": [], "valid": [], "test": []}
    for v in voices:
        speaker = voice_speaker(v)
        split = "test" if speaker in TEST_VARIANTS else "valid" if speaker in VALID_VARIANTS else "train"
        out[split].append(v)
    rng = np.random.default_rng([seed, 7])
    return {k: [vs[i] for i in rng.permutation(len(vs))] for k, vs in out.items()}


def speaker_id(voice: str) -> str:
    """A file-name-safe speaker label for a voice: ``en-gb-x-rp+m1`` -> ``en-gb-x-rp_m1``."""
    return voice.replace("+", "_")


def _speaker_style(voice: str, seed: int) -> tuple[int, int, int]:
    """A speaker's base rate (wpm), pitch and pitch range, fixed by voice and seed."""
    h = int(hashlib.sha1(f"{seed}:{voice}".encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(h)
    return int(rng.integers(135, 200)), int(rng.integers(25, 75)), int(rng.integers(30, 80))


@dataclass(frozen=True)
class _Job:
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


def _reverb(x: np.ndarray, rt60: float, rng: np.random.Generator, sr: int) -> np.ndarray:
    n = int(rt60 * sr)
    t = np.arange(n) / sr
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    ir[0] = 1.0 / max(1e-3, 0.3)  # direct path dominates
    ir /= np.sqrt(np.sum(ir**2))
    m = len(x) + n - 1
    size = 1 << (m - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)[: len(x)]
    return y * (np.max(np.abs(x)) / max(1e-9, np.max(np.abs(y))))


def _render(job: _Job, tts: Espeak) -> tuple[int, float]:
    """Synthesise one utterance to ``job.path``; returns (index, duration in seconds)."""
    if job.voice.startswith("flite+"):
        wav, sr = flite_synth(job.spoken, job.voice.split("+", 1)[1], rate=job.rate, pitch=job.pitch)
    elif job.voice.startswith("festival+"):
        wav, sr = festival_synth(job.spoken, job.voice.split("+", 1)[1], rate=job.rate, pitch=job.pitch)
    else:
        wav, sr = tts.synth(job.spoken, voice=job.voice, rate=job.rate, pitch=job.pitch, pitch_range=job.prange,
                             seed=job.noise_seed)
    x = resample(wav.astype(np.float32) / 32768.0, sr, SAMPLE_RATE)
    x *= job.gain
    rng = np.random.default_rng(job.noise_seed)
    if job.rt60:
        x = _reverb(x, job.rt60, rng, SAMPLE_RATE)
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


def _render_chunk(chunk: list[_Job]) -> list[tuple[str, int, float]]:
    """Render a chunk with a private, freshly loaded copy of libespeak-ng."""
    with Espeak(private=True) as tts:
        return [(j.split, *_render(j, tts)) for j in chunk]


def _read_text_file(path: str | os.PathLike) -> list[Sentence]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as err:
        raise ValueError(f"{path}: text file not found") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err}); re-save it as UTF-8") from err
    out = []
    for line in lines:
        spoken = " ".join(line.split())
        text = normalise_text(spoken)
        if text:
            out.append(Sentence(spoken, text))
    if not out:
        raise ValueError(f"{path}: no sentences in the text file (one sentence per line)")
    return out


def is_complete(out: str | os.PathLike, opts: SynthOptions) -> bool:
    """True when ``out`` holds a finished corpus made with exactly these options."""
    stamp = Path(out) / "synth.json"
    try:
        meta = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    if meta.get("fingerprint") != opts.fingerprint():
        return False
    return all((Path(out) / f"{s}.csv").exists() for s in SPLITS)


def synth_options(
    preset: str = "tiny",
    seed: int = 0,
    text_file: str | os.PathLike | None = None,
    utterances: tuple[int, int, int] | None = None,
    noise_prob: float = 0.0,
    snr_db: tuple[float, float] = (10.0, 30.0),
    reverb_prob: float = 0.0,
    rt60: tuple[float, float] = (0.15, 0.6),
    extra_voices: bool | str = "auto",
) -> SynthOptions:
    """The options (voices included) that :func:`synthesize_corpus` would use on this machine."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    counts = tuple(utterances) if utterances else p.utterances
    extras = extra_voice_pool(extra_voices)
    voices = split_voices(seed, voices=available_voices() + extras)
    chosen = {s: (voices[s][: n] if n else voices[s]) for s, n in zip(SPLITS, p.speakers)}
    return SynthOptions(
        preset=preset, seed=seed, utterances=counts, speakers=p.speakers,
        text_file_sha1=hashlib.sha1(Path(text_file).read_bytes()).hexdigest() if text_file else "",
        noise_prob=noise_prob, snr_db=tuple(snr_db), reverb_prob=reverb_prob, rt60=tuple(rt60), voices=chosen,
        extra_voices=extras,
    )


def extra_voices_used(opts: SynthOptions | dict) -> dict[str, list[str]]:
    """``{split: [flite/festival voices picked]}`` from options or ``synth.json``'s ``"options"``."""
    voices = opts.voices if isinstance(opts, SynthOptions) else opts.get("voices", {})
    return {s: [v for v in voices.get(s, []) if v.split("+", 1)[0] in EXTRA_ENGINES] for s in SPLITS}


def synthesize_corpus(
    out: str | os.PathLike,
    preset: str = "tiny",
    seed: int = 0,
    text_file: str | os.PathLike | None = None,
    utterances: tuple[int, int, int] | None = None,
    noise_prob: float = 0.0,
    snr_db: tuple[float, float] = (10.0, 30.0),
    reverb_prob: float = 0.0,
    rt60: tuple[float, float] = (0.15, 0.6),
    jobs: int | None = None,
    progress: bool = True,
    force: bool = False,
    extra_voices: bool | str = "auto",
) -> dict[str, Path]:
    """Make the synthetic corpus in ``out``; return ``{split: manifest path}``.

    Args:
        out: output folder (``wav/SPLIT/SPEAKER/ID.wav`` plus ``train.csv``, ``valid.csv``, ``test.csv``).
        preset: ``tiny``, ``demo`` or ``full`` (see :data:`PRESETS`).
        seed: everything random derives from it.
        text_file: sentences to speak, one per line (default: the sentence generator).
        utterances: override the preset's (train, valid, test) counts.
        noise_prob, snr_db: share of utterances with additive noise, and its SNR range in dB.
        reverb_prob, rt60: share of utterances with reverberation, and its RT60 range in s.
        jobs: worker processes (default: all cores).
        force: remake even if a complete corpus with the same options is there.
        extra_voices: the flite and festival voices: ``"auto"`` (default) adds those installed,
            True requires both (``ValueError`` naming the missing command and its apt
            package), False uses espeak-ng only (the same corpus on every machine). The
            voices are part of the options (``synth.json``), so the fingerprint changes with them.
    """
    sentences_from_file = _read_text_file(text_file) if text_file else None
    opts = synth_options(preset, seed, text_file, utterances, noise_prob, snr_db, reverb_prob, rt60, extra_voices)
    counts, chosen = opts.utterances, opts.voices
    out = Path(out)
    if not force and is_complete(out, opts):
        if progress:
            print(f"{out}: corpus already complete with the same options; nothing to do")
        return {s: out / f"{s}.csv" for s in SPLITS}

    # Plan every utterance in this process, deterministically.
    gen = SentenceGenerator(seed)
    text_rng = np.random.default_rng([seed, 11])
    order = text_rng.permutation(len(sentences_from_file)) if sentences_from_file else None
    jobs_by_split: dict[str, list[_Job]] = {}
    k = 0
    for si, (split, n) in enumerate(zip(SPLITS, counts)):
        vs = chosen[split]
        plan = []
        for i in range(n):
            voice = vs[i % len(vs)]
            if sentences_from_file:
                sent = sentences_from_file[order[k % len(order)]]
            else:
                sent = gen.sentence()
            k += 1
            r = np.random.default_rng([seed, si, i])
            base_rate, base_pitch, prange = _speaker_style(voice, seed)
            spk = speaker_id(voice)
            uid = f"{spk}-{split}{i:05d}"
            plan.append(_Job(
                index=i, split=split, voice=voice, spoken=sent.spoken, text=sent.text,
                rate=int(base_rate + r.integers(-12, 13)), pitch=int(np.clip(base_pitch + r.integers(-6, 7), 0, 99)),
                prange=prange, gain=float(r.uniform(0.35, 0.95)),
                snr=float(r.uniform(*snr_db)) if r.random() < noise_prob else None,
                rt60=float(r.uniform(*rt60)) if r.random() < reverb_prob else None,
                noise_seed=int(r.integers(2**31)),
                path=str(out / "wav" / split / spk / f"{uid}.wav"),
            ))
        jobs_by_split[split] = plan

    stamp = out / "synth.json"
    if stamp.exists():
        stamp.unlink()  # options changed or forced
    # Resume: a run killed with the same options keeps its finished chunks (files are
    # written atomically); anything else starts from an empty folder.
    started = out / ".synth-started.json"
    resume = not force and started.exists() and started.read_text() == opts.fingerprint()
    if not resume:
        for split in SPLITS:
            shutil.rmtree(out / "wav" / split, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        started.write_text(opts.fingerprint())
    all_jobs = [j for s in SPLITS for j in jobs_by_split[s]]
    durations: dict[tuple[str, int], float] = {}
    jobs = jobs or os.cpu_count() or 1
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(all_jobs), desc=f"synth {preset}", unit="utt")
    # espeak-ng keeps internal state between utterances (its output depends on what was
    # spoken before, even after espeak_Terminate), so every chunk of CHUNK utterances is
    # rendered by a freshly loaded private copy of the library: the bytes depend neither on
    # the number of processes nor on what the process did before.
    chunks = [all_jobs[i:i + CHUNK] for i in range(0, len(all_jobs), CHUNK)]
    if resume:
        todo = []
        for chunk in chunks:
            if all(os.path.exists(j.path) for j in chunk):
                for j in chunk:
                    durations[(j.split, j.index)] = audio_info(j.path).duration
            else:
                todo.append(chunk)
        if progress and len(todo) < len(chunks):
            print(f"{out}: resuming, {len(chunks) - len(todo)} of {len(chunks)} chunks already made")
        chunks = todo

    def record(done: list[tuple[str, int, float]]) -> None:
        for split, idx, dur in done:
            durations[(split, idx)] = dur
        if bar:
            bar.update(len(done))

    if bar and durations:
        bar.update(len(durations))

    if jobs > 1 and len(chunks) > 1:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(min(jobs, len(chunks)), initializer=_init_worker) as pool:
            for done in pool.imap(_render_chunk, chunks):
                record(done)
    else:
        for chunk in chunks:
            record(_render_chunk(chunk))
    if bar:
        bar.close()
    wall = time.perf_counter() - t0

    manifests = {}
    total = 0.0
    for split in SPLITS:
        entries = []
        for j in jobs_by_split[split]:
            d = durations[(split, j.index)]
            total += d
            rel = os.path.relpath(j.path, out).replace(os.sep, "/")
            entries.append(Entry(
                id=Path(j.path).stem, duration=round(d, 4), wav=f"$data_root/{rel}", spk_id=speaker_id(j.voice),
                wrd=j.text, extra={"voice": j.voice, "rate": str(j.rate), "pitch": str(j.pitch),
                                   "snr_db": "" if j.snr is None else f"{j.snr:.1f}",
                                   "rt60": "" if j.rt60 is None else f"{j.rt60:.2f}"},
            ))
        manifests[split] = out / f"{split}.csv"
        write_manifest(manifests[split], entries)
    meta = {"fingerprint": opts.fingerprint(), "options": asdict(opts), "hours": round(total / 3600, 4),
            "seconds_of_audio": round(total, 2), "wall_seconds": round(wall, 2), "jobs": jobs,
            "real_time_factor": round(total / max(wall, 1e-9), 1)}
    tmp = out / ".synth.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, stamp)
    started.unlink(missing_ok=True)
    if progress:
        print(f"{out}: {len(all_jobs)} utterances, {total / 3600:.2f} h of audio in {wall:.1f} s "
              f"({total / max(wall, 1e-9):.0f}x real time, {jobs} processes)")
    return manifests
