"""The ASR recipe's config as typed sections, each with its defaults in one place.

A recipe YAML (``base`` + preset + ``--set`` overrides, :mod:`asr_kd.config`) becomes one
:class:`AsrSettings`: every section is a frozen dataclass whose field defaults are the
defaults of the toolkit (``recipes/synth_en/config.yaml``'s ``base`` spells them out, and a
test keeps the two equal). Unknown keys and values of the wrong kind are refused with the
key and the fix; keys a user's config leaves out take their defaults.

Stage fingerprints are the sections as plain data (:meth:`Section.to_dict`), passed through
:func:`stable` so that a setting added later, at the default that means the old behaviour,
leaves the fingerprints of finished stages unchanged (list it in :data:`ADDED_DEFAULTS`).

Example
-------
>>> s = AsrSettings.from_dict({"train": {"epochs": 3}, "students": {"kd": {"temperature": 2}}})
>>> s.train.epochs, s.train.lr, s.students.kd.temperature, s.score.beam.lm_weight
(3, 0.005, 2, 0.5)
>>> AsrSettings.from_dict({"features": {"nmels": 40}})
Traceback (most recent call last):
asr_kd.config.ConfigError: unknown key 'features.nmels'; known here: ['n_mels']
>>> stable({"model": {"hidden": 128, "encoder": "blstm"}})
{'model': {'hidden': 128}}
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from asr_kd.config import ConfigError, Section
from asr_kd.io import drop_defaults
from asr_kd.models.encoders import ENCODERS

GUIDANCE = ("none", "guided", "both")
STUDENT_VARIANTS = ("scratch", "kd", "kd-guided", "sequence")
SCALE_BY = ("params", "width")
CORPUS_KINDS = ("synth", "manifests", "librispeech", "commonvoice", "folder")
DEVICES = ("cpu", "cuda", "auto")
ENSEMBLE_METHODS = ("arithmetic", "geometric")

#: Settings added after experiments were first run, at the value meaning the old behaviour,
#: keyed as they appear in stage fingerprints. Such a value is left out of a fingerprint.
ADDED_DEFAULTS: dict[str, Any] = {
    "corpus": {"synth": {"extra_voices": False}},  # false: espeak-ng voices only, the corpus before
    "model": {"encoder": "blstm", "packed": True, "kernel": 15, "stack": 1, "delay": 0},
    "ensemble": {"weights": None},
    "transfer": {"utterances": 0, "manifest": None},  # no transfer set
    "scale_by": "width",  # students: before, scale was a width factor
    "student_model": {},  # students: before, a student had the teacher's shape
    "kd": {
        "hint_weight": 0.0,
        "hint_layer": "encoder",
        "hint_loss": "mse",
        "hint_teacher": 0,
        "targets": "cache",
        "mixup": 0.0,
    },
    "small_data": {"kd": {}},  # small-soft: students.kd as it is
    "specialists": {"dustbin": "run", "subset_share": 0.0, "balanced": False, "transfer": False},  # as first run
}


def stable(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """``fingerprint`` without the added settings that are at their old default."""
    return drop_defaults(fingerprint, ADDED_DEFAULTS)


@dataclass(frozen=True)
class SynthSettings(Section):
    preset: str = "demo"
    seed: int = 0
    noise_prob: float = 0.3
    snr_db: list = field(default_factory=lambda: [15, 30])
    reverb_prob: float = 0.0
    extra_voices: Any = False  #: false, or "auto"


@dataclass(frozen=True)
class CorpusSettings(Section):
    OPEN = ("manifests", "splits")
    kind: str = "synth"
    synth: SynthSettings = field(default_factory=SynthSettings)
    manifests: dict = field(default_factory=lambda: {"train": None, "valid": None, "test": None})
    src: str | None = None
    splits: dict = field(default_factory=dict)
    skip_bad_rows: bool = False


@dataclass(frozen=True)
class TransferSettings(Section):
    """The paper's transfer set, audio labelled by the ensemble's posteriors (no transcript used): ``utterances``
    synthesised (``corpus.kind: synth``: the training voices, new sentences) or a ``manifest`` of any corpus."""

    utterances: int = 0
    manifest: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.utterances or self.manifest)


@dataclass(frozen=True)
class TokenizerSettings(Section):
    kind: str = "char"
    vocab_size: int = 64


@dataclass(frozen=True)
class FeatureSettings(Section):
    n_mels: int = 80


@dataclass(frozen=True)
class SpecAugmentSettings(Section):
    freq_masks: int = 2
    freq_width: int = 15
    time_masks: int = 2
    time_width: int = 25
    max_time_ratio: float = 0.2


@dataclass(frozen=True)
class ModelSettings(Section):
    """The teacher's architecture (a student is it scaled); see :mod:`asr_kd.models.acoustic`."""

    encoder: str = "blstm"
    conv_channels: int = 16
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.1
    packed: bool = False  #: true: the BiLSTM on packed sequences (same function, ~3x slower on a CPU)
    kernel: int = 15  #: encoder conv: frames per depthwise convolution (odd)
    stack: int = 1  #: front-end frames per encoder step (2: the encoder at half the frame rate)
    delay: int = 0  #: output frames read ahead (a streaming ``lstm`` student's delayed targets)


@dataclass(frozen=True)
class TrainSettings(Section):
    """Optimisation: AdamW, linear warm-up over ``warmup`` of the steps, then cosine decay to 0."""

    epochs: int = 6
    batch_size: int = 8
    lr: float = 0.005
    weight_decay: float = 0.01
    warmup: float = 0.1
    max_grad_norm: float = 5.0


@dataclass(frozen=True)
class TeacherSettings(Section):
    OPEN = ("overrides",)
    count: int = 4
    guidance: str = "guided"
    guide_weight: float = 0.5
    overrides: dict = field(default_factory=dict)

    def override(self, i: int) -> dict:
        """Teacher ``i``'s own overrides (``{model: {...}, train: {...}}``)."""
        return dict(self.overrides.get(i) or self.overrides.get(str(i)) or {})


@dataclass(frozen=True)
class EnsembleSettings(Section):
    method: str = "arithmetic"
    top_k: int = 16
    weights: list | None = None  #: one weight per member (None: equal)


@dataclass(frozen=True)
class KDSettings(Section):
    """``w_hard * CTC + w_soft * T^2 * KL(ensemble_T || student_T)`` per frame."""

    temperature: float = 1.0
    hard_weight: float = 0.5
    soft_weight: float = 1.0
    soft: str = "kl"
    blank_weight: float = 1.0
    hint_weight: float = 0.0  #: > 0: also match a layer of one ensemble member (asr_kd.asr.hints)
    hint_layer: str = "encoder"  #: the module matched, by name in both models
    hint_loss: str = "mse"  #: mse | cosine
    hint_teacher: int = 0  #: which member of the ensemble (its index)
    targets: str = "cache"  #: cache (the ensemble's, clean features) | live (members run on each augmented batch)
    mixup: float = 0.0  #: live, hard_weight 0 only: > 0 mixes each batch with itself, Beta(mixup, mixup) weights


@dataclass(frozen=True)
class StudentSettings(Section):
    """The students: their size (``scale`` of a teacher's parameters, or of its widths with
    ``scale_by: width``), shape (``model`` overrides, e.g. ``{layers: 3}``), schedule and loss."""

    OPEN = ("train", "model")
    scale: float = 0.5
    scale_by: str = "params"
    model: dict = field(default_factory=dict)
    variants: list = field(default_factory=lambda: ["scratch", "kd", "kd-guided", "sequence"])
    width_scales: list = field(default_factory=list)
    seeds: list = field(default_factory=lambda: [0])  #: a scratch + kd pair per extra seed (the spread)
    transfer: bool = True  #: distilled and sequence-level students also learn from the transfer set
    train: dict = field(default_factory=dict)
    kd: KDSettings = field(default_factory=KDSettings)
    temperatures: list = field(default_factory=list)
    kd_scales: list = field(default_factory=list)


@dataclass(frozen=True)
class OnlineSettings(Section):
    """Stage ``online`` (:mod:`asr_kd.asr.online`): peers and a student trained in one pass, the student on the peers'
    posteriors, each peer on the others' with ``mutual_weight`` (0: CTC alone); no soft term before ``burn_in``."""

    enabled: bool = False
    mutual_weight: float = 0.0
    burn_in: float = 1.0


@dataclass(frozen=True)
class SpecialistSettings(Section):
    """Stage ``specialists``: each setting is explained in :mod:`asr_kd.asr.specialists`."""

    enabled: bool = False
    clusters: list = field(default_factory=lambda: [4])
    balanced: bool = False
    top_n: int = 1
    epochs: int = 3
    lr: float = 0.0005
    dustbin: str = "run"
    subset_share: float = 0.0
    transfer: bool = False
    combine_steps: int = 200
    combine_lr: float = 0.3


@dataclass(frozen=True)
class SmallDataSettings(Section):
    """The paper's Table 5: with ``share`` > 0, two models of a teacher's size on that share of the training
    utterances (drawn with ``seed``), ``epochs`` epochs: ``small-hard`` on the transcripts (CTC, best epoch on
    valid), ``small-soft`` on the ensemble's soft targets + the hard term (``students.kd`` updated by ``kd``).
    Frame labels: the forced alignments of the transcripts by the teacher ``align_with``."""

    OPEN = ("kd",)
    share: float = 0.0
    epochs: int = 100
    seed: int = 0
    kd: dict = field(default_factory=dict)
    align_with: str = "teacher-0"


@dataclass(frozen=True)
class BeamSettings(Section):
    """Beam search over the training transcripts' words with their n-gram LM (size 0: greedy only)."""

    size: int = 32
    lm_order: int = 3
    lm_weight: float = 0.5
    word_score: float = 0.0


@dataclass(frozen=True)
class ScoreSettings(Section):
    rtf_utterances: int = 40
    rtf_repeats: int = 3
    rtf_batch: int = 16
    beam: BeamSettings = field(default_factory=BeamSettings)


@dataclass(frozen=True)
class AsrSettings(Section):
    """Every setting of an ASR recipe run."""

    exp_dir: str = "exp/{preset}"
    seed: int = 0
    device: str = "auto"
    threads: int = 2
    parallel: int = 2
    progress: bool = True
    corpus: CorpusSettings = field(default_factory=CorpusSettings)
    transfer: TransferSettings = field(default_factory=TransferSettings)
    tokenizer: TokenizerSettings = field(default_factory=TokenizerSettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    specaugment: SpecAugmentSettings | None = field(default_factory=SpecAugmentSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    teachers: TeacherSettings = field(default_factory=TeacherSettings)
    ensemble: EnsembleSettings = field(default_factory=EnsembleSettings)
    students: StudentSettings = field(default_factory=StudentSettings)
    online: OnlineSettings = field(default_factory=OnlineSettings)
    specialists: SpecialistSettings = field(default_factory=SpecialistSettings)
    small_data: SmallDataSettings = field(default_factory=SmallDataSettings)
    score: ScoreSettings = field(default_factory=ScoreSettings)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "", prefix: str = "") -> AsrSettings:
        d = dict(d or {})
        off = "specaugment" in d and not d["specaugment"]  # {} or null: no SpecAugment
        if off:
            d.pop("specaugment")
        s = super().from_dict(d, where, prefix)
        if off:
            s = dataclasses.replace(s, specaugment=None)
        s.check(where)
        return s

    def check(self, where: str = "") -> None:
        """The choices that are one of a set, and the combinations that cannot work."""
        checks = [
            (self.corpus.kind in CORPUS_KINDS, f"corpus.kind must be one of {CORPUS_KINDS}"),
            (self.teachers.guidance in GUIDANCE, f"teachers.guidance must be one of {GUIDANCE}"),
            (self.teachers.count >= 1, "teachers.count must be at least 1"),
            (set(self.students.variants) <= set(STUDENT_VARIANTS), f"students.variants: one of {STUDENT_VARIANTS}"),
            (self.students.scale_by in SCALE_BY, f"students.scale_by must be one of {SCALE_BY}"),
            (0 < self.students.scale <= 1, "students.scale must be in (0, 1]: a share of a teacher's size"),
            (self.transfer.utterances >= 0, "transfer.utterances must be 0 (none) or more"),
            (
                len(self.students.seeds) >= 1 and len(set(self.students.seeds)) == len(self.students.seeds),
                "students.seeds: give distinct seeds, the first for the main students, e.g. [0, 1, 2]",
            ),
            (
                not self.transfer.utterances or self.corpus.kind == "synth",
                "transfer.utterances synthesises a transfer set for corpus.kind synth only; for another "
                "corpus give a manifest of untranscribed audio with --set transfer.manifest=PATH",
            ),
            (0 <= self.small_data.share < 1, "small_data.share must be in [0, 1): 0 (off) or a share, e.g. 0.03"),
            (self.online.mutual_weight >= 0 and self.online.burn_in >= 0, "online: mutual_weight, burn_in >= 0"),
            (self.small_data.epochs >= 1, "small_data.epochs must be at least 1"),
            (
                re.fullmatch(r"teacher-\d+", self.small_data.align_with) is not None
                and int(self.small_data.align_with.split("-")[1]) < self.teachers.count,
                f"small_data.align_with must name a teacher, teacher-0 .. teacher-{self.teachers.count - 1} "
                f"(now {self.small_data.align_with!r})",
            ),
            (min(self.specialists.clusters, default=0) >= 2, "specialists.clusters: K-means sizes, each >= 2"),
            (
                self.specialists.dustbin in ("run", "piece") and 0 <= self.specialists.subset_share < 1,
                "specialists: dustbin must be run or piece, subset_share in [0, 1) (0: natural sampling; 0.5)",
            ),
            (
                not self.specialists.transfer or (self.transfer.active and self.teachers.guidance != "guided"),
                "specialists.transfer: the specialists learn the plain ensemble's transcripts of the transfer set; "
                "give one (--set transfer.utterances=N) and unguided teachers (teachers.guidance none or both)",
            ),
            (self.device in DEVICES, "device must be cpu, cuda or auto"),
            (
                {self.students.kd.targets, self.small_data.kd.get("targets", "cache")} <= {"cache", "live"},
                "students.kd.targets and small_data.kd.targets must be cache or live",
            ),
            (self.ensemble.method in ENSEMBLE_METHODS, f"ensemble.method must be one of {ENSEMBLE_METHODS}"),
            (
                self.ensemble.weights is None or len(self.ensemble.weights) == self.teachers.count,
                "ensemble.weights: give one weight per teacher (teachers.count), or null for equal weights",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{where}{message}")
        TrainSettings.from_dict(self.students.train, where, "students.train.")
        ModelSettings.from_dict(self.students.model, where, "students.model.")
        if self.teachers.guidance != "none" and self.teachers.count < 2:
            raise ConfigError(f"{where}guided teachers need teachers.count >= 2 (teacher 0 guides the others)")
        KDSettings.from_dict(self.small_data.kd, where, "small_data.kd.")
        small_kd = dataclasses.replace(self.students.kd, **self.small_data.kd)
        for key, kd in (("students.kd", self.students.kd), ("small_data.kd", small_kd)):
            if kd.mixup < 0 or (kd.mixup > 0 and (kd.targets != "live" or kd.hard_weight)):
                raise ConfigError(
                    f"{where}{key}.mixup mixes utterances, which no transcript or cached target describes: set it "
                    f">= 0, and > 0 only with targets: live and hard_weight: 0 (now {kd.targets!r}, {kd.hard_weight})"
                )
        student = dataclasses.replace(self.model, **self.students.model)
        for key, model in (("model", self.model), ("students.model", student)):
            if model.encoder not in ENCODERS:
                raise ConfigError(f"{where}{key}.encoder: unknown encoder {model.encoder!r}; known: {sorted(ENCODERS)}")
            if model.kernel < 1 or model.kernel % 2 == 0:
                raise ConfigError(f"{where}{key}.kernel must be odd (centred on its frame), got {model.kernel}")
            if model.stack < 1:
                raise ConfigError(f"{where}{key}.stack must be 1 or more frames per encoder step, got {model.stack}")
            if model.delay < 0 or (model.delay and model.encoder != "lstm"):
                raise ConfigError(
                    f"{where}{key}.delay must be 0, or more frames with encoder: lstm (a bidirectional or "
                    f"convolutional encoder already sees the future), got {model.delay} with {model.encoder}"
                )
        kd = self.students.kd
        if kd.hint_weight < 0 or kd.hint_loss not in ("mse", "cosine"):
            raise ConfigError(f"{where}students.kd: hint_weight must be >= 0 and hint_loss mse or cosine")
        if not 0 <= kd.hint_teacher <= (kd_max := self.teachers.count - 1):
            raise ConfigError(f"{where}students.kd.hint_teacher: {kd.hint_teacher} is not a member (0..{kd_max})")
        for i, over in self.teachers.overrides.items():
            unknown = set(over) - {"model", "train"}
            if unknown:
                raise ConfigError(
                    f"{where}teachers.overrides.{i}: unknown section(s) {sorted(unknown)}; "
                    "a teacher overrides model and train settings only"
                )
            ModelSettings.from_dict(over.get("model"), where, f"teachers.overrides.{i}.model.")
            TrainSettings.from_dict(over.get("train"), where, f"teachers.overrides.{i}.train.")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), **({"specaugment": {}} if self.specaugment is None else {})}
