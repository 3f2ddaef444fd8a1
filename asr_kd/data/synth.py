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

Where the code is: :mod:`~asr_kd.data.synth_voices` (speakers, splits, speaking styles),
:mod:`~asr_kd.data.synth_render` (one planned utterance -> one WAV file); this module holds
the presets, the options and their stamp, the plan of every utterance and the manifests.

Example
-------
>>> opts = synth_options("tiny", seed=0, extra_voices=False)
>>> opts.utterances, {split: len(voices) for split, voices in opts.voices.items()}
((40, 10, 10), {'train': 8, 'valid': 2, 'test': 2})
>>> manifests = synthesize_corpus("data/synth_tiny", preset="tiny", seed=0)   # doctest: +SKIP
>>> sorted(manifests)                                                        # doctest: +SKIP
['test', 'train', 'valid']
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..io import write_json, write_text
from .audio import SAMPLE_RATE, audio_info
from .espeak import available_voices
from .manifest_io import Entry, write_manifest
from .sentences import Sentence, SentenceGenerator, read_sentences
from .synth_render import CHUNK, Job, render_chunks
from .synth_voices import (
    EXTRA_ENGINES,
    TEST_VARIANTS,
    VALID_VARIANTS,
    extra_voice_pool,
    speaker_id,
    speaker_style,
    split_voices,
    voice_speaker,
)

__all__ = [
    "CHUNK",
    "EXTRA_ENGINES",
    "PRESETS",
    "SPLITS",
    "TEST_VARIANTS",
    "TRANSFER",
    "VALID_VARIANTS",
    "Preset",
    "SynthOptions",
    "extra_voice_pool",
    "extra_voices_used",
    "is_complete",
    "speaker_id",
    "split_voices",
    "synth_options",
    "synthesize_corpus",
    "voice_speaker",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
#: the split of utterances meant for use without their transcripts (a distillation transfer set)
TRANSFER = "transfer"


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
    #: untranscribed-use utterances (``transfer.csv``): training voices, sentences of their own
    transfer: int = 0

    def fingerprint(self) -> str:
        d = asdict(self)
        if not d["extra_voices"]:
            del d["extra_voices"]  # espeak-ng only: the same fingerprint as before extra voices existed
        if not d["transfer"]:
            del d["transfer"]  # no transfer set: the fingerprint from before it existed
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def synth_options(
    preset: str = "tiny",
    seed: int = 0,
    text_file: str | os.PathLike | None = None,
    utterances: tuple[int, int, int] | None = None,
    *,
    extra_voices: bool | str = "auto",
    noise_prob: float = 0.0,
    snr_db: tuple[float, float] = (10.0, 30.0),
    reverb_prob: float = 0.0,
    rt60: tuple[float, float] = (0.15, 0.6),
    transfer: int = 0,
) -> SynthOptions:
    """The options (voices included) that :func:`synthesize_corpus` would use on this machine."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    counts = (utterances[0], utterances[1], utterances[2]) if utterances else p.utterances
    extras = extra_voice_pool(extra_voices)
    voices = split_voices(seed, voices=available_voices() + extras)
    chosen = {s: (voices[s][:n] if n else voices[s]) for s, n in zip(SPLITS, p.speakers, strict=True)}
    return SynthOptions(
        preset=preset,
        seed=seed,
        utterances=counts,
        speakers=p.speakers,
        text_file_sha1=hashlib.sha1(Path(text_file).read_bytes()).hexdigest() if text_file else "",
        noise_prob=noise_prob,
        snr_db=(snr_db[0], snr_db[1]),
        reverb_prob=reverb_prob,
        rt60=(rt60[0], rt60[1]),
        voices=chosen,
        extra_voices=extras,
        transfer=int(transfer),
    )


def extra_voices_used(opts: SynthOptions | dict) -> dict[str, list[str]]:
    """``{split: [flite/festival voices picked]}`` from options or ``synth.json``'s ``"options"``."""
    voices = opts.voices if isinstance(opts, SynthOptions) else opts.get("voices", {})
    return {s: [v for v in voices.get(s, []) if v.split("+", 1)[0] in EXTRA_ENGINES] for s in SPLITS}


def is_complete(out: str | os.PathLike, opts: SynthOptions) -> bool:
    """True when ``out`` holds a finished corpus made with exactly these options (its ``synth.json`` stamp)."""
    stamp = Path(out) / "synth.json"
    try:
        meta = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    if meta.get("fingerprint") != opts.fingerprint():
        return False
    return all((Path(out) / f"{s}.csv").exists() for s in _splits(opts))


def _splits(opts: SynthOptions) -> tuple[str, ...]:
    """The corpus's splits: train, valid, test, and ``transfer`` when it has one."""
    return (*SPLITS, TRANSFER) if opts.transfer else SPLITS


def _plan(opts: SynthOptions, out: Path, sentences_from_file: list[Sentence] | None) -> dict[str, list[Job]]:
    """Every utterance of every split, planned in this process, deterministically from the seed."""
    seed = opts.seed
    gen = SentenceGenerator(seed)
    text_rng = np.random.default_rng([seed, 11])
    order = text_rng.permutation(len(sentences_from_file)) if sentences_from_file else np.zeros(0, dtype=np.int64)
    jobs_by_split: dict[str, list[Job]] = {}
    k = 0
    groups = [(split, n, opts.voices[split]) for split, n in zip(SPLITS, opts.utterances, strict=True)]
    if opts.transfer:  # the training voices, and sentences from a stream of their own
        groups.append((TRANSFER, opts.transfer, opts.voices["train"]))
    for si, (split, n, vs) in enumerate(groups):
        plan = []
        if split == TRANSFER:
            gen = SentenceGenerator(seed + 1_000_003)
        for i in range(n):
            voice = vs[i % len(vs)]
            sent = sentences_from_file[order[k % len(order)]] if sentences_from_file else gen.sentence()
            k += 1
            r = np.random.default_rng([seed, si, i])
            base_rate, base_pitch, prange = speaker_style(voice, seed)
            spk = speaker_id(voice)
            uid = f"{spk}-{split}{i:05d}"
            plan.append(
                Job(
                    index=i,
                    split=split,
                    voice=voice,
                    spoken=sent.spoken,
                    text=sent.text,
                    rate=int(base_rate + r.integers(-12, 13)),
                    pitch=int(np.clip(base_pitch + r.integers(-6, 7), 0, 99)),
                    prange=prange,
                    gain=float(r.uniform(0.35, 0.95)),
                    snr=float(r.uniform(*opts.snr_db)) if r.random() < opts.noise_prob else None,
                    rt60=float(r.uniform(*opts.rt60)) if r.random() < opts.reverb_prob else None,
                    noise_seed=int(r.integers(2**31)),
                    path=str(out / "wav" / split / spk / f"{uid}.wav"),
                )
            )
        jobs_by_split[split] = plan
    return jobs_by_split


def _manifest_entry(job: Job, duration: float, out: Path) -> Entry:
    rel = os.path.relpath(job.path, out).replace(os.sep, "/")
    extra = {
        "voice": job.voice,
        "rate": str(job.rate),
        "pitch": str(job.pitch),
        "snr_db": "" if job.snr is None else f"{job.snr:.1f}",
        "rt60": "" if job.rt60 is None else f"{job.rt60:.2f}",
    }
    return Entry(
        id=Path(job.path).stem,
        duration=round(duration, 4),
        wav=f"$data_root/{rel}",
        spk_id=speaker_id(job.voice),
        wrd=job.text,
        extra=extra,
    )


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
    transfer: int = 0,
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
        progress: show a progress bar and log the progress lines at INFO (False: at DEBUG, no bar).
        force: remake even if a complete corpus with the same options is there.
        extra_voices: the flite and festival voices: ``"auto"`` (default) adds those installed,
            True requires both (``ValueError`` naming the missing command and its apt
            package), False uses espeak-ng only (the same corpus on every machine). The
            voices are part of the options (``synth.json``), so the fingerprint changes with them.
        transfer: also this many utterances in ``transfer.csv`` (the training voices, other
            sentences), meant to be used without their transcripts, e.g. as a distillation
            transfer set labelled by a teacher ensemble.
    """
    say = log.info if progress else log.debug
    sentences_from_file = read_sentences(text_file) if text_file else None
    opts = synth_options(
        preset,
        seed,
        text_file,
        utterances,
        noise_prob=noise_prob,
        snr_db=snr_db,
        reverb_prob=reverb_prob,
        rt60=rt60,
        extra_voices=extra_voices,
        transfer=transfer,
    )
    out = Path(out)
    splits = _splits(opts)
    if not force and is_complete(out, opts):
        say(f"{out}: corpus already complete with the same options; nothing to do")
        return {s: out / f"{s}.csv" for s in splits}
    jobs_by_split = _plan(opts, out, sentences_from_file)

    stamp = out / "synth.json"
    if stamp.exists():
        stamp.unlink()  # options changed or forced
    # Resume: a run killed with the same options keeps its finished chunks (files are
    # written atomically); anything else starts from an empty folder.
    started = out / ".synth-started.json"
    resume = not force and started.exists() and started.read_text() == opts.fingerprint()
    if not resume:
        for split in (*SPLITS, TRANSFER):
            shutil.rmtree(out / "wav" / split, ignore_errors=True)
        write_text(started, opts.fingerprint())
    all_jobs = [j for s in splits for j in jobs_by_split[s]]
    durations: dict[tuple[str, int], float] = {}
    jobs = jobs or os.cpu_count() or 1
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(all_jobs), desc=f"synth {preset}", unit="utt")
    # every chunk of CHUNK utterances gets a freshly loaded espeak-ng (see asr_kd.data.synth_render)
    chunks = [all_jobs[i : i + CHUNK] for i in range(0, len(all_jobs), CHUNK)]
    if resume:
        todo = []
        for chunk in chunks:
            if all(os.path.exists(j.path) for j in chunk):
                for j in chunk:
                    durations[(j.split, j.index)] = audio_info(j.path).duration
            else:
                todo.append(chunk)
        if len(todo) < len(chunks):
            say(f"{out}: resuming, {len(chunks) - len(todo)} of {len(chunks)} chunks already made")
        chunks = todo

    def record(done: list[tuple[str, int, float]]) -> None:
        for split, idx, dur in done:
            durations[(split, idx)] = dur
        if bar:
            bar.update(len(done))

    if bar and durations:
        bar.update(len(durations))
    render_chunks(chunks, jobs, record)
    if bar:
        bar.close()
    wall = time.perf_counter() - t0

    manifests = {}
    total = 0.0
    for split in splits:
        entries = []
        for j in jobs_by_split[split]:
            d = durations[(split, j.index)]
            total += d
            entries.append(_manifest_entry(j, d, out))
        manifests[split] = out / f"{split}.csv"
        write_manifest(manifests[split], entries)
    meta = {
        "fingerprint": opts.fingerprint(),
        "options": asdict(opts),
        "hours": round(total / 3600, 4),
        "seconds_of_audio": round(total, 2),
        "wall_seconds": round(wall, 2),
        "jobs": jobs,
        "real_time_factor": round(total / max(wall, 1e-9), 1),
    }
    write_json(stamp, meta)
    started.unlink(missing_ok=True)
    say(
        f"{out}: {len(all_jobs)} utterances, {total / 3600:.2f} h of audio in {wall:.1f} s "
        f"({total / max(wall, 1e-9):.0f}x real time, {jobs} processes)"
    )
    return manifests
