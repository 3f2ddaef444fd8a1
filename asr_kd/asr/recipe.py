"""The ASR distillation recipe, stage by stage: corpus -> teachers -> ensemble -> students -> WER.

Stages (each skips finished work and resumes interrupted work, see :mod:`asr_kd.stages`):

1. ``prepare``: the corpus (synthesised, or prepared from a real one, or given as
   manifests), validated; tokenizer; stored features; train-set normalisation.
2. ``teacher-0`` .. ``teacher-{N-1}``: full-size CTC teachers that differ by seed (and by
   optional per-teacher overrides). Unguided.
3. ``spikes``: teacher 0's forced alignments on the training set (guided training).
4. ``guided-1`` .. ``guided-{N-1}``: teachers trained with an extra framewise term that
   puts their spikes where teacher 0 put its own (Kurata & Audhkhasi 2019).
5. ``ensemble``: per ensemble (unguided, guided) the combined frame posteriors of the
   training set, cached as top-k by utterance ID, and its greedy transcripts.
6. ``student-*``: half-width students: ``scratch`` (CTC on transcripts), ``kd`` (CTC +
   T^2-scaled frame KL against the cached posteriors), ``kd-guided`` (the same from the
   guided ensemble), ``sequence`` (CTC on the ensemble's transcripts), ``kd-T<t>``
   for the temperature sweep, and ``kd-x<s>``: distilled students of other widths
   (``students.kd_scales``; ``kd-x1`` is the paper's same-size student).
7. ``score``: every model and ensemble on the test set: WER/CER (jiwer), trn files,
   per-utterance alignments, frame agreement with the ensemble, decoding speed.
8. ``report``: ``RESULTS.md``, ``results.json`` and plots in the experiment folder.

Example
-------
>>> from asr_kd.asr.recipe import default_config_path, load_asr_config
>>> cfg = load_asr_config(default_config_path("synth_en"), "tiny")
>>> cfg["teachers"]["count"], cfg["corpus"]["synth"]["preset"]
(2, 'tiny')
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import yaml
from torch import Tensor, nn

from asr_kd.config import ConfigError, check_keys, merge, read_config
from asr_kd.io import write_atomic
from asr_kd.stages import Stage, is_done, run_stages

GUIDANCE = ("none", "guided", "both")
STUDENTS = ("scratch", "kd", "kd-guided", "sequence")
CORPUS_KINDS = ("synth", "manifests", "librispeech", "commonvoice", "folder")
TRAINED = ("teacher", "guided", "student")  #: stage name prefixes of model trainings


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_config_path(recipe: str = "synth_en") -> Path:
    return repo_root() / "recipes" / recipe / "config.yaml"


def _missing_keys(schema: Mapping[str, Any], node: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, default in schema.items():
        if key not in node:
            out.append(f"{prefix}{key}")
        elif isinstance(default, Mapping) and default and isinstance(node[key], Mapping):
            out += _missing_keys(default, node[key], f"{prefix}{key}.")
    return out


def _check_schema(cfg: Mapping[str, Any], path: str | os.PathLike) -> None:
    """An ASR config (e.g. a user's copy) has the keys of the reference recipe's ``base``, of the same kinds."""
    reference = default_config_path("synth_en")
    with open(reference, encoding="utf-8") as f:
        schema = yaml.safe_load(f)["base"]
    own = {k: v for k, v in cfg.items() if k not in ("preset", "overrides", "config_path")}
    check_keys(own, schema, f"{path}: ")
    missing = _missing_keys(schema, own)
    if missing:
        raise ConfigError(f"{path}: missing key(s) {', '.join(missing)}; copy them from the base of {reference.name} "
                          f"in recipes/{reference.parent.name}/")


def load_asr_config(path: str | os.PathLike, preset: str | None = None, overrides: Sequence[str] = ()) -> dict:
    """Read a recipe config (``base`` + preset + overrides) and check its choices."""
    cfg = read_config(path, preset, overrides)
    cfg["config_path"] = str(path)
    _check_schema(cfg, path)
    checks = [
        (cfg["corpus"]["kind"] in CORPUS_KINDS, f"corpus.kind must be one of {CORPUS_KINDS}"),
        (cfg["teachers"]["guidance"] in GUIDANCE, f"teachers.guidance must be one of {GUIDANCE}"),
        (int(cfg["teachers"]["count"]) >= 1, "teachers.count must be at least 1"),
        (set(cfg["students"]["variants"]) <= set(STUDENTS), f"students.variants: choose from {STUDENTS}"),
        (cfg["device"] in ("cpu", "cuda", "auto"), "device must be cpu, cuda or auto"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{path}: {message}")
    if cfg["teachers"]["guidance"] != "none" and int(cfg["teachers"]["count"]) < 2:
        raise ConfigError(f"{path}: guided teachers need teachers.count >= 2 (teacher 0 guides the others)")
    return cfg


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1, default=str)))


class Normalised(nn.Module):
    """A loaded model as ``(raw feats, frames) -> (logits, out frames)`` for ensembles."""

    def __init__(self, loaded) -> None:
        super().__init__()
        self.loaded = loaded

    def forward(self, feats: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        lp, n = self.loaded.log_probs(feats, frames)
        return lp, n


class AsrRecipe:
    """One experiment: a config (base + preset + overrides) and its folder.

    Args:
        cfg: from :func:`load_asr_config`.
        log: where progress lines go.
    """

    def __init__(self, cfg: Mapping[str, Any], log: Callable[[str], None] = print) -> None:
        self.cfg = dict(cfg)
        self.log = log
        base = Path(cfg["config_path"]).resolve().parent
        exp = Path(str(cfg["exp_dir"]).format(preset=cfg.get("preset") or "base"))
        self.exp = exp if exp.is_absolute() else base / exp
        self.data_dir = self.exp / "data"
        self.device = self._device()
        self._cache: dict[str, Any] = {}

    # ------------------------------------------------------------------ setup

    def _device(self) -> str:
        want = self.cfg["device"]
        if want == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if want == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device: cuda was asked for but torch sees no CUDA device; use --set device=cpu")
        return want

    @property
    def n_teachers(self) -> int:
        return int(self.cfg["teachers"]["count"])

    def teacher_names(self, guided: bool) -> list[str]:
        return ["teacher-0"] + [f"{'guided' if guided else 'teacher'}-{i}" for i in range(1, self.n_teachers)]

    def ensembles(self) -> dict[str, list[str]]:
        """Ensemble name -> member names, for the guidance settings of the config."""
        g = self.cfg["teachers"]["guidance"]
        out = {}
        if g in ("none", "both"):
            out["ensemble"] = self.teacher_names(False)
        if g in ("guided", "both"):
            out["ensemble-guided"] = self.teacher_names(True)
        return out

    def main_ensemble(self) -> str:
        return "ensemble" if "ensemble" in self.ensembles() else "ensemble-guided"

    def student_names(self) -> list[str]:
        names = []
        ens = self.ensembles()
        for v in self.cfg["students"]["variants"]:
            if v == "kd-guided" and "ensemble-guided" not in ens:
                continue
            if v == "kd" and "ensemble" not in ens:
                continue
            names.append(f"student-{v}")
        names += [f"student-kd-T{t:g}" for t in self.cfg["students"]["temperatures"]]
        if "student-kd" in names:
            names += [f"student-kd-x{x:g}" for x in self.cfg["students"].get("kd_scales") or []]
        return names

    def student_scale(self, name: str) -> float:
        """Width of student ``name`` relative to a teacher (``student-kd-x1``: 1.0)."""
        if name.startswith("student-kd-x"):
            return float(name[len("student-kd-x"):])
        return float(self.cfg["students"]["scale"])

    # ------------------------------------------------------------------ stages

    def stages(self) -> list[Stage]:
        c = self.cfg
        prep_cfg = prepare_config(c)
        model_cfg = {"model": c["model"], "train": c["train"], "specaugment": c["specaugment"], "seed": c["seed"]}
        stages = [Stage("prepare", self.prepare, prep_cfg, outputs=[self.data_dir])]
        guidance = c["teachers"]["guidance"]
        n_unguided = self.n_teachers if guidance in ("none", "both") else 1
        for i in range(n_unguided):
            stages.append(Stage(f"teacher-{i}", lambda i=i: self.train_teacher(i, guided=False),
                                {**model_cfg, "overrides": self._teacher_override(i)},
                                depends=["prepare"], outputs=[self.exp / "models" / f"teacher-{i}"]))
        if guidance in ("guided", "both"):
            stages.append(Stage("spikes", self.spikes, {}, depends=["prepare", "teacher-0"],
                                outputs=[self.exp / "guidance"]))
            for i in range(1, self.n_teachers):
                stages.append(Stage(f"guided-{i}", lambda i=i: self.train_teacher(i, guided=True),
                                    {**model_cfg, "overrides": self._teacher_override(i),
                                     "guide_weight": c["teachers"]["guide_weight"]},
                                    depends=["prepare", "spikes"], outputs=[self.exp / "models" / f"guided-{i}"]))
        teacher_stages = [s.name for s in stages if s.name != "prepare"]
        stages.append(Stage("ensemble", self.ensemble_stage, {"ensemble": c["ensemble"]},
                            depends=["prepare", *teacher_stages], outputs=[self.exp / "ensembles"]))
        student_cfg = {**model_cfg, "students": c["students"]["train"]}
        for name in self.student_names():
            extra = {"kd": c["students"]["kd"]} if "kd" in name else {}
            stages.append(Stage(name, lambda name=name: self.train_student(name),
                                {**student_cfg, "scale": self.student_scale(name), **extra},
                                depends=["prepare", "ensemble"], outputs=[self.exp / "models" / name]))
        model_stages = [s.name for s in stages if s.name not in ("prepare", "ensemble")]
        stages.append(Stage("score", self.score, {"score": c["score"]},
                            depends=["prepare", "ensemble", *model_stages], outputs=[self.exp / "score"]))
        stages.append(Stage("report", self.report, {}, depends=["score"]))
        return stages

    def run(self, start: int | str = 1, stop: int | str | None = None, teacher: int | None = None) -> list[str]:
        stages = self.stages()
        names = [s.name for s in stages]

        def number(x: int | str | None) -> int | None:
            if x is None or isinstance(x, int):
                return x
            if str(x).isdigit():
                return int(x)
            if x not in names:
                raise ConfigError(f"no stage {x!r}; stages: {', '.join(f'{i}={n}' for i, n in enumerate(names, 1))}")
            return names.index(x) + 1

        if teacher is not None:
            if not 0 <= teacher < self.n_teachers:
                raise ConfigError(f"--teacher {teacher}: teachers are 0..{self.n_teachers - 1}")
            wanted = f"guided-{teacher}" if f"guided-{teacher}" in names and teacher > 0 and \
                f"teacher-{teacher}" not in names else f"teacher-{teacher}"
            run_stages(stages, self.exp, 1, 1, log=self.log)
            k = names.index(wanted) + 1
            return run_stages(stages, self.exp, k, k, log=self.log)
        self.exp.mkdir(parents=True, exist_ok=True)
        _write_json(self.exp / "config.json", self.cfg)
        first, last = number(start) or 1, number(stop) or len(stages)
        jobs = int(self.cfg["parallel"])
        if jobs <= 1:
            return run_stages(stages, self.exp, first, last, log=self.log)
        ran: list[str] = []
        k = first
        while k <= last:  # in order; consecutive training stages go to `jobs` worker processes at a time
            end = k
            if stages[k - 1].name.split("-")[0] in TRAINED:
                while end < last and stages[end].name.split("-")[0] in TRAINED:
                    end += 1
            if end > k:
                self._train_in_parallel([s.name for s in stages[k - 1 : end]], jobs)
            ran += run_stages(stages, self.exp, k, end, log=self.log)
            k = end + 1
        return ran

    def run_stage(self, name: str) -> bool:
        """Run the one stage ``name`` (a worker of a parallel run); True when it finished."""
        stages = self.stages()
        k = [s.name for s in stages].index(name) + 1
        run_stages(stages, self.exp, k, k, log=self.log)
        return True

    def _train_in_parallel(self, names: Sequence[str], jobs: int) -> None:
        """Run training stages as ``jobs`` worker processes at a time, each with its share of threads.

        Stages already finished are left out. When the rest do not split evenly into ``jobs``
        (3 teachers on 2 jobs), the odd ones run first with the threads shared among fewer
        processes, so no core idles behind a lone 1-thread worker at the end.
        """
        import subprocess
        import sys

        stages = self.stages()
        numbers = {s.name: k for k, s in enumerate(stages, 1)}
        todo = [n for n in names if not is_done(stages, self.exp, numbers[n])]
        total = int(self.cfg["threads"])
        logs = self.exp / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        waves = worker_waves(len(todo), jobs)
        pending, failed = list(todo), []
        for width, count in waves:
            threads = max(1, total // width)
            sets = [*self.cfg.get("overrides", []), f"threads={threads}", "parallel=1", "progress=false"]
            wave, running = pending[:count], []
            pending = pending[count:]
            while wave or running:
                while wave and len(running) < width:
                    name = wave.pop(0)
                    cmd = [sys.executable, "-m", "asr_kd", "run", self.cfg["config_path"], "--worker",
                           "--stage", name, "--stop-stage", name]
                    if self.cfg.get("preset"):
                        cmd += ["--preset", self.cfg["preset"]]
                    for item in sets:
                        cmd += ["--set", item]
                    log_file = open(logs / f"{name}.log", "a")
                    self.log(f"{name}: training in a worker process ({threads} thread(s)), "
                             f"log {logs / (name + '.log')}")
                    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
                    running.append((name, proc, log_file))
                time.sleep(1)
                for item in list(running):
                    name, proc, log_file = item
                    if proc.poll() is None:
                        continue
                    running.remove(item)
                    log_file.close()
                    tail = (logs / f"{name}.log").read_text(errors="replace").strip().splitlines()
                    if proc.returncode != 0:
                        failed.append(name)
                        self.log(f"{name}: FAILED (exit {proc.returncode}); end of its log:\n  "
                                 + "\n  ".join(tail[-15:]))
                    else:
                        self.log(f"{name}: {tail[-2] if len(tail) > 1 else 'done'}")
        if failed:
            raise RuntimeError(f"training failed in worker process(es) {failed}; see {logs}")

    # ------------------------------------------------------------------ stage 1: prepare

    def prepare(self) -> None:
        from asr_kd.asr.data import cmvn_from_features, extract_features
        from asr_kd.data.features import FeatureConfig
        from asr_kd.data.manifest import load_manifest
        from asr_kd.data.tokenizer import train_tokenizer

        manifests = self._corpus_manifests()
        skip = bool(self.cfg["corpus"]["skip_bad_rows"])
        entries = {}
        for split in ("train", "valid", "test"):
            entries[split] = load_manifest(manifests[split], skip_bad=skip, log=self.log)
        tcfg = self.cfg["tokenizer"]
        tok_dir = self.data_dir / "tokenizer"
        tok = train_tokenizer([e.wrd for e in entries["train"]], tok_dir, kind=tcfg["kind"],
                              vocab_size=int(tcfg["vocab_size"]))
        feature_cfg = FeatureConfig(n_mels=int(self.cfg["features"]["n_mels"]))
        summary = {"splits": {}, "tokenizer": tcfg, "num_classes": self._num_classes(tok)}
        for split, rows in entries.items():
            feats = extract_features(rows, self.data_dir / "feats" / f"{split}.pt", feature_cfg,
                                     desc=f"features {split}", progress=bool(self.cfg["progress"]))
            texts = {e.id: e.wrd for e in rows}
            _write_json(self.data_dir / f"{split}.text.json", texts)
            frames = sum(len(f) for f in feats.values())
            summary["splits"][split] = {"manifest": str(manifests[split]), "utterances": len(rows),
                                        "hours": round(frames * feature_cfg.hop / feature_cfg.sample_rate / 3600, 3)}
            self.log(f"  {split}: {len(rows)} utterances, {summary['splits'][split]['hours']} h")
            if split == "train":
                cmvn_from_features(feats).save(self.data_dir / "cmvn.json")
        summary["features"] = feature_cfg.fingerprint()
        _write_json(self.data_dir / "summary.json", summary)

    def _num_classes(self, tok) -> int:
        from asr_kd.data.tokenizer import CharTokenizer

        if isinstance(tok, CharTokenizer):
            return len(tok.chars) + 1
        return tok.sp.get_piece_size() + 1

    def _corpus_manifests(self) -> dict[str, Path]:
        corpus = self.cfg["corpus"]
        kind = corpus["kind"]
        if kind == "manifests":
            paths = {s: corpus["manifests"].get(s) for s in ("train", "valid", "test")}
            missing = [s for s, p in paths.items() if not p]
            if missing:
                raise ConfigError(f"corpus.kind is manifests but corpus.manifests.{missing[0]} is not set; "
                                  f"e.g. --set corpus.manifests.{missing[0]}=path/to/{missing[0]}.csv")
            return {s: Path(p) for s, p in paths.items()}
        out = self.exp / "corpus"
        if kind == "synth":
            from asr_kd.data.synth import synthesize_corpus

            s = corpus["synth"]
            return synthesize_corpus(out, preset=s["preset"], seed=int(s["seed"]), noise_prob=float(s["noise_prob"]),
                                     snr_db=tuple(s["snr_db"]), reverb_prob=float(s["reverb_prob"]),
                                     extra_voices=s.get("extra_voices", False),
                                     jobs=int(self.cfg["threads"]), progress=bool(self.cfg["progress"]))
        src = corpus.get("src")
        if not src or not Path(src).exists():
            raise ConfigError(f"corpus.kind is {kind} but corpus.src ({src!r}) is not an existing folder; "
                              f"set it with --set corpus.src=/path/to/the/corpus")
        from asr_kd.data import prepare as prep

        fn = {"librispeech": prep.prepare_librispeech, "commonvoice": prep.prepare_commonvoice,
              "folder": prep.prepare_folder}[kind]
        made = fn(Path(src), out)
        splits = corpus.get("splits") or {}
        result = {}
        for split in ("train", "valid", "test"):
            name = splits.get(split, split)
            if name not in made:
                raise ConfigError(f"the {kind} corpus in {src} has no split {name!r} (found: {sorted(made)}); "
                                  f"map it with --set corpus.splits.{split}=<one of those>")
            result[split] = made[name]
        return result

    # ------------------------------------------------------------------ data access

    def summary(self) -> dict:
        return json.loads((self.data_dir / "summary.json").read_text())

    def feats(self, split: str) -> dict[str, Tensor]:
        key = f"feats:{split}"
        if key not in self._cache:
            self._cache[key] = torch.load(self.data_dir / "feats" / f"{split}.pt", weights_only=False)["feats"]
        return self._cache[key]

    def texts(self, split: str) -> dict[str, str]:
        return json.loads((self.data_dir / f"{split}.text.json").read_text())

    def tokenizer(self):
        from asr_kd.data.tokenizer import load_tokenizer

        if "tok" not in self._cache:
            self._cache["tok"] = load_tokenizer(self.data_dir / "tokenizer")
        return self._cache["tok"]

    def cmvn(self):
        from asr_kd.data.features import GlobalCMVN

        return GlobalCMVN.load(self.data_dir / "cmvn.json")

    def fingerprint(self) -> dict:
        """What must match between teachers, their cached posteriors and students."""
        s = self.summary()
        tok_meta = json.loads((self.data_dir / "tokenizer" / "tokenizer.json").read_text())
        return {"features": s["features"], "subsampling": 4, "num_classes": s["num_classes"],
                "tokenizer": tok_meta, "train_ids": _digest(sorted(self.texts("train")))}

    def model_config(self, scale: float = 1.0, override: Mapping[str, Any] | None = None):
        from asr_kd.models.acoustic import AcousticConfig

        m = merge(self.cfg["model"], override or {})
        cfg = AcousticConfig(num_classes=self.summary()["num_classes"], n_mels=int(self.cfg["features"]["n_mels"]),
                             conv_channels=int(m["conv_channels"]), hidden=int(m["hidden"]), layers=int(m["layers"]),
                             dropout=float(m["dropout"]))
        return cfg.scaled(scale) if scale != 1.0 else cfg

    def _teacher_override(self, i: int) -> dict:
        overrides = self.cfg["teachers"].get("overrides") or {}
        return dict(overrides.get(i) or overrides.get(str(i)) or {})

    # ------------------------------------------------------------------ training

    def _train(self, name: str, model_cfg, train_cfg: Mapping[str, Any], seed: int,
               texts: Mapping[str, str] | None = None, **hparams: Any) -> Path:
        from asr_kd.asr.data import encode_transcripts, make_dataset
        from asr_kd.asr.train import TrainConfig, train_ctc
        from asr_kd.data.features import SpecAugmentConfig

        tok = self.tokenizer()
        train_texts = texts if texts is not None else self.texts("train")
        train_tokens = encode_transcripts(train_texts, tok.encode)
        valid_tokens = encode_transcripts(self.texts("valid"), tok.encode, "validation transcript", skip=self.log)
        feats, vfeats = self.feats("train"), self.feats("valid")
        train_set = make_dataset(feats, train_tokens)
        valid_set = make_dataset(vfeats, valid_tokens)
        lengths = [len(feats[i]) for i in train_tokens]
        return train_ctc(
            self.exp / "models" / name, model_cfg, train_set, lengths, valid_set, self.cmvn(),
            TrainConfig.from_dict(train_cfg), seed,
            info={"name": name, "fingerprint": self.fingerprint()},
            detokenize=lambda ids: tok.decode([int(i) for i in ids]), tokenizer_dir=self.data_dir / "tokenizer",
            augment=SpecAugmentConfig(**self.cfg["specaugment"]) if self.cfg["specaugment"] else None,
            device=self.device, progress=bool(self.cfg["progress"]), log=self.log, **hparams,
        )

    def train_teacher(self, i: int, guided: bool) -> Path:
        override = self._teacher_override(i)
        train_cfg = merge(self.cfg["train"], override.get("train", {}))
        model_cfg = self.model_config(override=override.get("model"))
        hparams = {}
        if guided:
            hparams = {"guide_weight": float(self.cfg["teachers"]["guide_weight"]),
                       "guide_spikes": torch.load(self.exp / "guidance" / "spikes.pt", weights_only=False)}
        name = f"{'guided' if guided else 'teacher'}-{i}"
        return self._train(name, model_cfg, train_cfg, seed=int(self.cfg["seed"]) + 1000 * i, **hparams)

    def load(self, name: str):
        from asr_kd.asr.train import load_bundle

        return load_bundle(self.exp / "models" / name, device=self.device)

    def _log_probs(self, members: Sequence[str], split: str, batch_size: int = 32, method: str = "arithmetic"):
        """Yield ``(ids, log_probs (B, T, C), frames)`` of one model or an ensemble on a split."""
        from asr_kd.asr.data import padded_batches
        from asr_kd.asr.ensemble import ensemble_log_probs

        models = [Normalised(self.load(m)) for m in members]
        feats = self.feats(split)
        for ids, x, n in padded_batches(feats, list(feats), batch_size):
            x, n = x.to(self.device), n.to(self.device)
            if len(models) == 1:
                lp, out_n = models[0](x, n)
            else:
                lp, out_n = ensemble_log_probs(models, x, n, method=method)
            yield ids, lp, out_n

    def spikes(self) -> None:
        from asr_kd.asr.guidance import forced_spikes
        from asr_kd.asr.data import encode_transcripts

        tok = self.tokenizer()
        tokens = encode_transcripts(self.texts("train"), tok.encode)
        spikes: dict[str, Tensor] = {}
        for ids, lp, n in self._log_probs(["teacher-0"], "train"):
            targets = nn.utils.rnn.pad_sequence([torch.tensor(tokens[i]) for i in ids], batch_first=True)
            lengths = torch.tensor([len(tokens[i]) for i in ids])
            s = forced_spikes(lp.cpu(), n.cpu(), targets, lengths)
            for b, utt in enumerate(ids):
                spikes[utt] = s[b, : int(n[b])].clone()
        aligned = sum(int((s >= 0).any()) for s in spikes.values())
        self.log(f"  forced spikes for {aligned} of {len(spikes)} training utterances")
        path = self.exp / "guidance" / "spikes.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda tmp: torch.save(spikes, tmp))

    # ------------------------------------------------------------------ ensemble and cache

    def cache_fingerprint(self, ensemble: str) -> dict:
        members = self.ensembles()[ensemble]
        digests = {m: _digest(json.loads(json.dumps(self._bundle_info(m), default=str))) for m in members}
        return {**self.fingerprint(), "members": digests, "method": self.cfg["ensemble"]["method"],
                "top_k": int(self.cfg["ensemble"]["top_k"])}

    def _bundle_info(self, name: str) -> dict:
        key = f"info:{name}"
        if key not in self._cache:
            self._cache[key] = torch.load(self.exp / "models" / name / "model.pt", map_location="cpu",
                                          weights_only=False)["info"]
        return self._cache[key]

    def ensemble_stage(self) -> None:
        from asr_kd.asr.decode import greedy_decode
        from asr_kd.distill import CacheWriter

        tok = self.tokenizer()
        ecfg = self.cfg["ensemble"]
        for name, members in self.ensembles().items():
            out = self.exp / "ensembles" / name
            writer = CacheWriter(out / "cache", num_classes=self.summary()["num_classes"], k=int(ecfg["top_k"]),
                                 fingerprint=self.cache_fingerprint(name))
            hyps_path = out / "train_hyps.json"
            hyps = json.loads(hyps_path.read_text()) if hyps_path.exists() else {}
            self.log(f"  {name}: caching top-{ecfg['top_k']} posteriors of {', '.join(members)}")
            with writer:
                for ids, lp, n in self._log_probs(members, "train", method=ecfg["method"]):
                    decoded = greedy_decode(lp, n)
                    for b, utt in enumerate(ids):
                        hyps[utt] = tok.decode(decoded[b])
                        if utt not in writer:
                            writer.add(utt, lp[b, : int(n[b])].float().cpu())
            _write_json(hyps_path, hyps)

    def ensemble_cache(self, name: str):
        from asr_kd.distill import TeacherCache

        return TeacherCache(self.exp / "ensembles" / name / "cache", fingerprint=self.cache_fingerprint(name))

    # ------------------------------------------------------------------ students

    def train_student(self, name: str) -> Path:
        from asr_kd.distill import DistillationLoss

        s = self.cfg["students"]
        train_cfg = merge(self.cfg["train"], s["train"] or {})
        model_cfg = self.model_config(scale=self.student_scale(name))
        seed = int(self.cfg["seed"]) + 77
        variant = name[len("student-"):]
        if variant == "scratch":
            return self._train(name, model_cfg, train_cfg, seed)
        if variant == "sequence":
            hyps = json.loads((self.exp / "ensembles" / self.main_ensemble() / "train_hyps.json").read_text())
            kept = {u: h for u, h in hyps.items() if self.tokenizer().encode(h)}
            self.log(f"  {name}: {len(kept)} of {len(hyps)} ensemble transcripts are non-empty and used")
            if not kept:
                raise RuntimeError(f"{name}: the ensemble transcribed every training utterance as empty, so there "
                                   "is nothing to train on; train the teachers longer (train.epochs) or drop "
                                   "'sequence' from students.variants")
            return self._train(name, model_cfg, train_cfg, seed, texts=kept)
        kd = dict(s["kd"])
        if variant.startswith("kd-T"):
            kd["temperature"] = float(variant[len("kd-T"):])
        ensemble = "ensemble-guided" if variant == "kd-guided" else self.main_ensemble()
        loss = DistillationLoss(temperature=float(kd["temperature"]), hard_weight=float(kd["hard_weight"]),
                                soft_weight=float(kd["soft_weight"]), soft=kd["soft"])
        self.log(f"  {name}: {loss} (blank frames weighted {kd['blank_weight']}) against {ensemble}")
        return self._train(name, model_cfg, train_cfg, seed, kd=loss, teacher_cache=self.ensemble_cache(ensemble),
                           blank_weight=float(kd["blank_weight"]))

    # ------------------------------------------------------------------ scoring

    def model_rows(self) -> list[tuple[str, list[str]]]:
        """Every scored system: ``(name, member models)``."""
        rows: list[tuple[str, list[str]]] = []
        seen = set()
        for members in self.ensembles().values():
            for m in members:
                if m not in seen:
                    rows.append((m, [m]))
                    seen.add(m)
        rows += [(name, members) for name, members in self.ensembles().items()]
        rows += [(s, [s]) for s in self.student_names()]
        return rows

    def score(self) -> None:
        from asr_kd.asr.score import score_system

        out = self.exp / "score"
        out.mkdir(parents=True, exist_ok=True)
        texts = self.texts("test")
        reference = self._argmax(self.ensembles()[self.main_ensemble()])
        scores = {}
        for name, members in self.model_rows():
            path = out / f"{name}.json"
            if path.exists():
                scores[name] = json.loads(path.read_text())
                continue
            hyps, argmax = {}, {}
            tok = self.tokenizer()
            from asr_kd.asr.decode import greedy_decode

            beam, beam_hyps = self._beam_decoder(), {}
            for ids, lp, n in self._log_probs(members, "test", method=self.cfg["ensemble"]["method"]):
                for b, (utt, h) in enumerate(zip(ids, greedy_decode(lp, n))):
                    hyps[utt] = tok.decode(h)
                    argmax[utt] = lp[b, : int(n[b])].argmax(-1).cpu()
                if beam is not None:
                    beam_hyps.update(zip(ids, beam(lp, n)))
            result = score_system(out, name, texts, hyps, argmax, reference)
            if beam is not None:
                beamed = score_system(out, f"{name}.beam", texts, beam_hyps)
                result.update(beam_wer=beamed["wer"], beam_cer=beamed["cer"])
            result["parameters"] = sum(self._bundle_info(m)["parameters"] for m in members)
            result["members"] = members
            result["rtf"] = self._rtf(members)
            batch = int(self.cfg["score"].get("rtf_batch") or 0)
            result["rtf_batched"] = self._rtf(members, batch) if batch > 1 else None
            if beam is not None:
                self.log(f"  {name}: beam search with lexicon and LM: WER {100 * result['beam_wer']:.2f}")
            self.log(f"  {name}: WER {100 * result['wer']:.2f}  CER {100 * result['cer']:.2f}  "
                     f"frame agreement {100 * result['frame_agreement']:.1f}%  RTF {result['rtf']:.4f}"
                     + (f" (batches of {batch}: {result['rtf_batched']:.4f})" if batch > 1 else ""))
            _write_json(path, result)
            scores[name] = result
        _write_json(out / "scores.json", scores)

    def _beam_decoder(self) -> Callable[[Tensor, Tensor], list[str]] | None:
        """Beam search with a lexicon and an n-gram LM of the training transcripts
        (``score.beam``), or None when ``score.beam.size`` is 0."""
        from asr_kd.asr.decode import BeamDecoder
        from asr_kd.asr.lm import decoder_tokens, write_arpa, write_lexicon

        b = self.cfg["score"].get("beam") or {}
        if not int(b.get("size") or 0):
            return None
        if "beam" not in self._cache:
            folder = self.exp / "score" / "lm"
            folder.mkdir(parents=True, exist_ok=True)
            train = list(self.texts("train").values())
            words = write_lexicon(train, self.tokenizer(), folder / "lexicon.txt")
            lm = None
            if int(b.get("lm_order") or 0) > 0:
                write_arpa(train, folder / "lm.arpa", order=int(b["lm_order"]))
                lm = str(folder / "lm.arpa")
            self.log(f"  beam search: {words} words in the lexicon, "
                     + (f"{b['lm_order']}-gram LM" if lm else "no LM") + " from the training transcripts")
            decoder = BeamDecoder(decoder_tokens(self.tokenizer()), beam_size=int(b["size"]),
                                  lexicon=str(folder / "lexicon.txt"), lm=lm,
                                  lm_weight=float(b.get("lm_weight", 1.0)), word_score=float(b.get("word_score", 0.0)))
            self._cache["beam"] = decoder.words
        return self._cache["beam"]

    def _argmax(self, members: Sequence[str]) -> dict[str, Tensor]:
        out = {}
        for ids, lp, n in self._log_probs(members, "test", method=self.cfg["ensemble"]["method"]):
            for b, utt in enumerate(ids):
                out[utt] = lp[b, : int(n[b])].argmax(-1).cpu()
        return out

    def _rtf(self, members: Sequence[str], batch: int = 1) -> float:
        """Decoding real-time factor on one CPU thread: seconds of compute per second of audio.

        ``batch`` 1 decodes one utterance at a time (as a server answering one request);
        larger batches (of utterances sorted by length) show the throughput of offline decoding,
        where the per-time-step overhead of the LSTM is shared by the batch.
        """
        from asr_kd.asr.data import padded_batches
        from asr_kd.asr.decode import greedy_decode
        from asr_kd.asr.ensemble import ensemble_log_probs
        from asr_kd.asr.train import load_bundle

        feats = self.feats("test")
        ids = sorted(feats)[: int(self.cfg["score"]["rtf_utterances"])]
        models = [Normalised(load_bundle(self.exp / "models" / m, device="cpu")) for m in members]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            times = []
            for _ in range(int(self.cfg["score"]["rtf_repeats"])):
                began = time.perf_counter()
                for _, x, n in padded_batches(feats, ids, batch):
                    if len(models) == 1:
                        lp, out_n = models[0](x, n)
                    else:
                        lp, out_n = ensemble_log_probs(models, x, n, method=self.cfg["ensemble"]["method"])
                    greedy_decode(lp, out_n)
                times.append(time.perf_counter() - began)
        finally:
            torch.set_num_threads(threads)
        hop = self.summary()["features"]["hop_ms"] / 1000
        audio = sum(len(feats[i]) for i in ids) * hop
        return sorted(times)[len(times) // 2] / audio

    # ------------------------------------------------------------------ report

    def report(self) -> None:
        from asr_kd.asr.report import write_report

        write_report(self)


def prepare_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The settings the prepare stage depends on, without those added later that are at the
    value meaning the old behaviour (so adding a setting does not redo finished experiments).

    >>> c = {"corpus": {"kind": "synth", "synth": {"seed": 0, "extra_voices": False}},
    ...      "tokenizer": {"kind": "char"}, "features": {"n_mels": 80}}
    >>> prepare_config(c)["corpus"]["synth"]
    {'seed': 0}
    """
    out = json.loads(json.dumps({k: cfg[k] for k in ("corpus", "tokenizer", "features")}))
    synth = out["corpus"].get("synth") or {}
    if synth.get("extra_voices") is False:  # espeak-ng voices only: the corpus before the setting existed
        del synth["extra_voices"]
    return out


def worker_waves(n: int, jobs: int) -> list[tuple[int, int]]:
    """Plan ``n`` equal trainings on ``jobs`` workers: ``(workers at once, trainings)`` per wave.

    The remainder of ``n / jobs`` goes first, on fewer workers with more threads each;
    the rest follows ``jobs`` at a time (a finished worker's place is taken at once).

    >>> worker_waves(3, 2)
    [(1, 1), (2, 2)]
    >>> worker_waves(4, 2)
    [(2, 4)]
    >>> worker_waves(7, 3)
    [(1, 1), (3, 6)]
    >>> worker_waves(0, 2)
    []
    """
    odd, rest = n % jobs, n - n % jobs
    return [w for w in ((odd, odd), (jobs, rest)) if w[1]]


def format_seconds(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
