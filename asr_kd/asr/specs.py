"""The models of a recipe run, as specs built once from the settings.

A :class:`ModelSpec` says everything a training needs (role, seed, width, schedule,
distillation settings, which ensemble teaches it) and the fingerprint its stage records;
no code decides anything from a model's name. :func:`plan` lists the teachers (unguided and
guided), the ensembles and the students of a config, in stage order.

Example
-------
>>> from asr_kd.asr.settings import AsrSettings
>>> p = plan(AsrSettings.from_dict({"teachers": {"count": 2, "guidance": "both"},
...                                 "students": {"temperatures": [2], "kd_scales": [1.0]}}))
>>> [t.name for t in p.teachers], p.ensembles["ensemble-guided"]
(['teacher-0', 'teacher-1', 'guided-1'], ['teacher-0', 'guided-1'])
>>> [(s.name, s.variant, s.ensemble, s.scale) for s in p.students][-2:]
[('student-kd-T2', 'kd', 'ensemble', 0.5), ('student-kd-x1', 'kd', 'ensemble', 1.0)]
>>> p.spec("student-kd-T2").kd.temperature
2.0
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from asr_kd.asr.settings import AsrSettings, KDSettings, ModelSettings, TrainSettings, stable
from asr_kd.config import merge
from asr_kd.models.acoustic import AcousticConfig, parameter_count


@dataclass(frozen=True)
class ModelSpec:
    """One model to train.

    Args:
        name: its stage and folder name.
        role: ``teacher``, ``student``, ``peer`` (stage online) or ``specialist`` (stage specialists).
        variant: ``ctc`` (a teacher), ``scratch``, ``kd`` or ``sequence`` (students).
        guided: a teacher trained with teacher 0's spikes.
        ensemble: the ensemble a ``kd`` student learns from, or whose transcripts a
            ``sequence`` student learns.
        scale, scale_by: a student's size, ``scale`` of the teacher's (``reference``) parameters
            (``params``) or widths (``width``).
        transfer: a ``kd`` or ``sequence`` student (or, with ``specialists.transfer``, a specialist) that also
            learns from the transfer set.
        twin: a distilled student's scratch student of the same size, seed and schedule.
        seed_pair: one of the distilled students that differ only by seed (their spread).
        subset, subset_seed: the share of the transcribed training utterances it learns from
            (1.0: all), drawn with this seed (:func:`asr_kd.asr.data.draw_subset`).
        select: the epoch kept, ``best`` on validation or ``last`` (no early stopping).
        fingerprint: what its stage records (a change retrains it).
    """

    name: str
    role: str
    seed: int
    model: ModelSettings
    train: TrainSettings
    variant: str = "ctc"
    scale: float = 1.0
    guided: bool = False
    ensemble: str | None = None
    kd: KDSettings | None = None
    scale_by: str = "width"
    reference: ModelSettings | None = None
    transfer: bool = False
    twin: str | None = None
    seed_pair: bool = False
    subset: float = 1.0
    subset_seed: int = 0
    select: str = "best"
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def architecture(self, num_classes: int, n_mels: int) -> AcousticConfig:
        """Its model: a student is its own shape scaled to ``scale`` of the teacher's widths
        (``scale_by: width``) or to at most ``scale`` of the teacher's parameters (``params``)."""
        cfg = _acoustic(self.model, num_classes, n_mels)
        if self.scale_by == "params":
            assert self.reference is not None, f"{self.name}: scale_by params needs the teacher's model"
            budget = self.scale * parameter_count(_acoustic(self.reference, num_classes, n_mels))
            return cfg if self.reference == self.model and self.scale == 1.0 else cfg.fitted(int(budget))
        return cfg.scaled(self.scale) if self.scale != 1.0 else cfg


def _acoustic(m: ModelSettings, num_classes: int, n_mels: int) -> AcousticConfig:
    return AcousticConfig(
        num_classes=num_classes,
        n_mels=n_mels,
        conv_channels=m.conv_channels,
        hidden=m.hidden,
        layers=m.layers,
        dropout=m.dropout,
        encoder=m.encoder,
        packed=m.packed,
        kernel=m.kernel,
        stack=m.stack,
        delay=m.delay,
    )


@dataclass
class Plan:
    """The models and ensembles of a run, in stage order."""

    teachers: list[ModelSpec]
    ensembles: dict[str, list[str]]
    students: list[ModelSpec]
    online: list[ModelSpec] = field(default_factory=list)  #: stage online's peers, then its student
    specialists: list[ModelSpec] = field(default_factory=list)  #: stage specialists' models

    @property
    def systems(self) -> dict[str, list[str]]:
        """Every cached teacher: the ensembles and, with specialists, the generalist + specialists."""
        if not self.specialists:
            return dict(self.ensembles)
        return {**self.ensembles, SPECIALISTS: [GENERALIST, *(m.name for m in self.specialists)]}

    @property
    def main_ensemble(self) -> str:
        return "ensemble" if "ensemble" in self.ensembles else "ensemble-guided"

    def spec(self, name: str) -> ModelSpec:
        every = [*self.teachers, *self.students, *self.online, *self.specialists]
        for s in every:
            if s.name == name:
                return s
        names = [s.name for s in every]
        raise KeyError(f"no model {name!r} in this config; models: {names}")

    def rows(self) -> list[tuple[str, list[str]]]:
        """Every scored system: ``(name, member models)``: members, ensembles, students."""
        rows: list[tuple[str, list[str]]] = []
        for members in self.ensembles.values():
            rows += [(m, [m]) for m in members if (m, [m]) not in rows]
        rows += [(name, members) for name, members in self.systems.items()]
        rows += [(s.name, [s.name]) for s in self.students]
        if self.online:  # the online peers, their ensemble and the online student
            peers, student = [s.name for s in self.online[:-1]], self.online[-1].name
            rows += [*((p, [p]) for p in peers), (ONLINE_ENSEMBLE, peers), (student, [student])]
        return rows


def _teacher(s: AsrSettings, i: int, guided: bool) -> ModelSpec:
    over = s.teachers.override(i)
    model = ModelSettings.from_dict(merge(s.model.to_dict(), over.get("model") or {}))
    train = TrainSettings.from_dict(merge(s.train.to_dict(), over.get("train") or {}))
    fp: dict[str, Any] = {
        "model": s.model.to_dict(),
        "train": s.train.to_dict(),
        "specaugment": s.to_dict()["specaugment"],
        "seed": s.seed,
        "overrides": over,
    }
    if guided:
        fp["guide_weight"] = s.teachers.guide_weight
    name = f"{'guided' if guided else 'teacher'}-{i}"
    return ModelSpec(name, "teacher", s.seed + 1000 * i, model, train, guided=guided, fingerprint=fp)


def _student(
    s: AsrSettings,
    name: str,
    variant: str,
    ensemble: str | None,
    scale: float,
    kd: KDSettings | None,
    scale_by: str | None = None,
    seed: int | None = None,
) -> ModelSpec:
    train = TrainSettings.from_dict(merge(s.train.to_dict(), s.students.train))
    model = ModelSettings.from_dict(merge(s.model.to_dict(), s.students.model))
    scale_by = scale_by or s.students.scale_by
    fp: dict[str, Any] = {
        "model": s.model.to_dict(),
        "train": s.train.to_dict(),
        "specaugment": s.to_dict()["specaugment"],
        "seed": s.seed,
        "students": dict(s.students.train),
        "scale": scale,
        "scale_by": scale_by,
        "student_model": dict(s.students.model),
    }
    if kd is not None:  # the configured kd section (a temperature sweep's T is in the name)
        fp["kd"] = s.students.kd.to_dict()
    if seed is not None:  # an extra student seed (the main students keep the fingerprint of before)
        fp["student_seed"] = seed
    transfer = variant != "scratch" and s.transfer.active and s.students.transfer
    if transfer:
        fp["transfer"] = s.transfer.to_dict()
    return ModelSpec(
        name,
        "student",
        s.seed + 77 + (seed if seed is not None else s.students.seeds[0]),
        model,
        train,
        variant=variant,
        scale=scale,
        ensemble=ensemble,
        kd=kd,
        scale_by=scale_by,
        reference=s.model,
        transfer=transfer,
        fingerprint=fp,
    )


def plan(s: AsrSettings) -> Plan:
    """The teachers, ensembles and students of settings ``s``."""
    n, guidance = s.teachers.count, s.teachers.guidance
    unguided = n if guidance in ("none", "both") else 1
    teachers = [_teacher(s, i, False) for i in range(unguided)]
    if guidance in ("guided", "both"):
        teachers += [_teacher(s, i, True) for i in range(1, n)]
    ensembles = {}
    if guidance in ("none", "both"):
        ensembles["ensemble"] = [f"teacher-{i}" for i in range(n)]
    if guidance in ("guided", "both"):
        ensembles["ensemble-guided"] = ["teacher-0"] + [f"guided-{i}" for i in range(1, n)]
    main = "ensemble" if "ensemble" in ensembles else "ensemble-guided"
    scale, kd = s.students.scale, s.students.kd
    students = []
    for v in s.students.variants:
        if v == "scratch":
            students.append(_student(s, "student-scratch", "scratch", None, scale, None))
        elif v == "sequence":
            students.append(_student(s, "student-sequence", "sequence", main, scale, None))
        elif v == "kd" and "ensemble" in ensembles:
            students.append(_student(s, "student-kd", "kd", "ensemble", scale, kd))
        elif v == "kd-guided" and "ensemble-guided" in ensembles:
            students.append(_student(s, "student-kd-guided", "kd", "ensemble-guided", scale, kd))
    for t in s.students.temperatures:
        students.append(_student(s, f"student-kd-T{t:g}", "kd", main, scale, replace(kd, temperature=float(t))))
    if any(st.name == "student-kd" for st in students):
        for x in s.students.kd_scales:
            students.append(_student(s, f"student-kd-x{x:g}", "kd", "ensemble", float(x), kd))
    names = [st.name for st in students]
    if "student-scratch" in names and "student-kd" in names:
        k = names.index("student-kd")
        students[k] = replace(students[k], twin="student-scratch", seed_pair=len(s.students.seeds) > 1)
    for seed in s.students.seeds[1:]:  # the same scratch and distilled students from other seeds
        students.append(_student(s, f"student-scratch-s{seed}", "scratch", None, scale, None, seed=seed))
        kd_seed = _student(s, f"student-kd-s{seed}", "kd", main, scale, kd, seed=seed)
        students.append(replace(kd_seed, twin=f"student-scratch-s{seed}", seed_pair=True))
    for w in s.students.width_scales:  # scratch and distilled pairs scaled by width (e.g. 0.5: half-width)
        students.append(_student(s, f"student-scratch-w{w:g}", "scratch", None, float(w), None, "width"))
        kd_w = _student(s, f"student-kd-w{w:g}", "kd", main, float(w), kd, "width")
        students.append(replace(kd_w, twin=f"student-scratch-w{w:g}"))
    if s.small_data.share > 0:
        students += _small_data(s, main)
    online = _online(s, students) if s.online.enabled else []
    specialists = _specialists(s) if s.specialists.enabled else []
    if specialists:  # student-kd's twin, taught by the generalist + specialists
        kd_spec = _student(s, "student-kd-spec", "kd", SPECIALISTS, scale, kd)
        fp = {**kd_spec.fingerprint, "specialists": s.specialists.to_dict()}
        twin = "student-scratch" if "student-scratch" in names else None
        students.append(replace(kd_spec, twin=twin, fingerprint=fp))
    return Plan(teachers, ensembles, students, online, specialists)


ONLINE_ENSEMBLE = "online-ensemble"  #: the online peers combined (a scored row, never cached)
SPECIALISTS = "specialists"  #: the generalist + specialists combined (a scored row, a cache)
GENERALIST = "teacher-0"  #: the specialists' generalist


def _specialists(s: AsrSettings) -> list[ModelSpec]:
    """``specialist-0`` .. ``specialist-{M-1}``, M the sum of ``specialists.clusters``: teacher-0's
    model, fine-tuned ``specialists.epochs`` at ``specialists.lr`` (seeds teacher-0's + 1 ..)."""
    sp = s.specialists
    train = replace(s.train, epochs=int(sp.epochs), lr=float(sp.lr))
    base = _teacher(s, 0, False)
    fp = {**base.fingerprint, **stable({"specialists": sp.to_dict()})}  # the stage's fingerprint, its new keys
    transfer = bool(sp.transfer and s.transfer.active)  # also the ensemble's transcripts of the transfer set
    if transfer:
        fp["transfer"] = s.transfer.to_dict()
    return [
        replace(
            base,
            name=f"specialist-{i}",
            role="specialist",
            seed=base.seed + 1 + i,
            train=train,
            transfer=transfer,
            fingerprint=fp,
        )
        for i in range(sum(int(k) for k in sp.clusters))
    ]


def _online(s: AsrSettings, students: list[ModelSpec]) -> list[ModelSpec]:
    """Stage online's models: peer i is teacher i's model and seed, the student is student-kd's
    size and seed (its scratch twin: student-scratch); all on the recipe's ``train`` schedule."""
    peers = [
        replace(_teacher(s, i, False), name=f"online-peer-{i}", role="peer", fingerprint={})
        for i in range(s.teachers.count)
    ]
    kd = _student(s, "online-student", "online", ONLINE_ENSEMBLE, s.students.scale, s.students.kd)
    twin = "student-scratch" if any(st.name == "student-scratch" for st in students) else None
    student = replace(kd, train=s.train, transfer=False, twin=twin, fingerprint={})
    return [*peers, student]


def online_fingerprint(s: AsrSettings, models: list[ModelSpec]) -> dict[str, Any]:
    """What stage online records: a change retrains every model of it."""
    return {
        "models": [{"name": m.name, "seed": m.seed, "model": m.model.to_dict(), "scale": m.scale} for m in models],
        "students": {"scale_by": s.students.scale_by, "model": dict(s.students.model), "kd": s.students.kd.to_dict()},
        "train": s.train.to_dict(),
        "specaugment": s.to_dict()["specaugment"],
        "ensemble": s.ensemble.to_dict(),
        "online": s.online.to_dict(),
    }


def _small_data(s: AsrSettings, ensemble: str) -> list[ModelSpec]:
    """The paper's Table 5 pair: teacher-0's model, seed and schedule (``small_data.epochs``
    epochs) on a small share of the training set, with hard labels and with soft targets."""
    sd = s.small_data
    train = replace(s.train, epochs=sd.epochs)
    fp: dict[str, Any] = {
        "model": s.model.to_dict(),
        "train": train.to_dict(),
        "specaugment": s.to_dict()["specaugment"],
        "seed": s.seed,
        "small_data": {k: v for k, v in sd.to_dict().items() if k not in ("kd", "align_with")},  # training only
    }
    hard = ModelSpec(
        "small-hard", "student", s.seed, s.model, train, "scratch", subset=sd.share, subset_seed=sd.seed, fingerprint=fp
    )
    kd = KDSettings.from_dict(merge(s.students.kd.to_dict(), sd.kd))
    soft_fp = {**fp, "kd": kd.to_dict(), "ensemble": ensemble}
    soft = replace(hard, name="small-soft", variant="kd", ensemble=ensemble, kd=kd, select="last")
    return [hard, replace(soft, fingerprint=soft_fp)]
