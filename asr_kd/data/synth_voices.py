"""The voices of the synthetic corpus: who is a speaker, which split each one is in, how each one talks.

A *speaker* is an espeak-ng variant (``en-gb-x-rp+m3`` -> ``m3``: one variant is one speaker
in every accent) or, for the flite and festival voices, the person recorded
(:func:`voice_speaker`). Splits are speaker-disjoint: the speakers of :data:`TEST_VARIANTS`
and :data:`VALID_VARIANTS` are never heard in training. Each voice gets its own base speaking
rate, pitch and pitch range from the seed (:func:`speaker_style`).

Example
-------
>>> voice_speaker("en-gb-x-rp+m3"), voice_speaker("flite+kal16"), voice_speaker("festival+cmu_us_slt_arctic_hts")
('m3', 'kal', 'slt')
>>> split_voices(0, voices=["en-us+m1", "en-us+m3", "en-us+m6", "flite+kal16"])
{'train': ['en-us+m1', 'flite+kal16'], 'valid': ['en-us+m6'], 'test': ['en-us+m3']}
>>> speaker_id("en-gb-x-rp+m1")
'en-gb-x-rp_m1'
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from .espeak import available_voices
from .festival import festival_missing, festival_voices
from .flite import flite_missing, flite_voices

#: Speakers held out of training: valid and test each get their own. An espeak-ng voice's
#: speaker is its variant; a flite/festival voice's is the person recorded (see voice_speaker).
TEST_VARIANTS = ("m3", "f4", "klatt3", "grandpa", "quincy", "steph", "rms", "ked")
VALID_VARIANTS = ("m6", "f2", "aunty", "max", "awb")
#: Prefixes of the voices that do not come from espeak-ng.
EXTRA_ENGINES = ("flite", "festival")
#: Festival voice names: [institution_language_]SPEAKER[_arctic][_method], e.g. cmu_us_slt_arctic_hts.
_EXTRA_NAME = re.compile(
    r"^(?:[a-z]+_[a-z]{2}_)?([a-z0-9]+?)(?:_arctic)?"
    r"(?:_(?:diphone|mbrola|clunits|hts|cg|ldom|multisyn))*$"
)


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
            raise ValueError(
                "extra voices asked for (--extra-voices yes / extra_voices=True), but "
                + "; ".join(missing)
                + ". Install them, or use --extra-voices auto (those installed) "
                "or --extra-voices no (espeak-ng only)"
            )
    return fl + fe


def split_voices(
    seed: int = 0, voices: list[str] | None = None, extra_voices: bool | str = False
) -> dict[str, list[str]]:
    """Partition voices into train/valid/test, disjoint by speaker (:func:`voice_speaker`).

    Args:
        seed: orders the voices of each split.
        voices: the pool (default: every espeak-ng ``accent+variant`` voice, plus the extra voices).
        extra_voices: which flite/festival voices join the default pool (see :func:`extra_voice_pool`);
            False here, so that ``split_voices(seed)`` is the same on every machine.
    """
    if voices is None:
        voices = available_voices() + extra_voice_pool(extra_voices)
    out: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for v in voices:
        speaker = voice_speaker(v)
        split = "test" if speaker in TEST_VARIANTS else "valid" if speaker in VALID_VARIANTS else "train"
        out[split].append(v)
    rng = np.random.default_rng([seed, 7])
    return {k: [vs[i] for i in rng.permutation(len(vs))] for k, vs in out.items()}


def speaker_id(voice: str) -> str:
    """A file-name-safe speaker label for a voice: ``en-gb-x-rp+m1`` -> ``en-gb-x-rp_m1``."""
    return voice.replace("+", "_")


def speaker_style(voice: str, seed: int) -> tuple[int, int, int]:
    """A speaker's base rate (wpm), pitch and pitch range, fixed by voice and seed."""
    h = int(hashlib.sha1(f"{seed}:{voice}".encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(h)
    return int(rng.integers(135, 200)), int(rng.integers(25, 75)), int(rng.integers(30, 80))
