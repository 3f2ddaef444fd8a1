"""The MNIST distillation recipe (paper Section 3), experiment by experiment.

Experiments (each a list of trained models; every model is saved atomically
and skipped when already present, and a model killed mid-training continues from
its last finished epoch, so a killed run resumes where it stopped):

- ``teacher``: only the teacher.
- ``main``: teacher 784-1200-1200-10 (dropout, max-norm, 2-px jitter); student
  784-800-800-10 on hard labels, on soft targets at T=20, and at T=20 plus a
  small hard-label term; with ``distill.transfer_jitter`` > 0 also a student
  distilled on jittered transfer images (teacher run on each shifted batch).
- ``ensemble``: the teachers of ``ensemble.seeds`` (trained first, same output
  folder) combined into one teacher, scored, and distilled into a student at
  the main T (beyond the paper's MNIST experiment, which used one teacher).
- ``sweep``: soft-target students at each temperature, for each student width.
- ``omit3``: no 3s in the transfer set; errors overall and on the test 3s,
  before and after raising the class-3 bias (tuned on validation).
- ``only78``: a transfer set of only 7s and 8s; errors before and after
  lowering the 7 and 8 biases (tuned on validation).
- ``specialists``: the teacher as generalist plus specialists with a dustbin class,
  combined, and distilled into one student (:mod:`asr_kd.image.specialists`).

Configs come from one YAML (``base`` plus named ``presets``) and ``key=value``
overrides; see ``recipes/mnist/config.yaml``. ``device`` (``cpu``, ``cuda``) says
where the data and models live; saved models are always stored on the CPU.

Example
-------
>>> from asr_kd.image.config import default_config_path, load_config
>>> load_config(default_config_path(), "smoke")["teacher"]["epochs"]
6
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..distill import DistillationLoss
from ..io import write_atomic
from ..models.mlp import MLP
from .bias import run_omit3, run_only78
from .config import EXPERIMENTS, RecipeError, canonical_spec, machine
from .mnist import Mnist, default_data_dir, load_mnist
from .train import TrainResult, count_errors, logits_of, train, train_config


class Recipe:
    """Runs the experiments of one config for one seed, resumably.

    Args:
        cfg: the merged config (see :func:`load_config`).
        seed: seed of every model of this run (teacher and students).
        data_dir: MNIST idx directory (``None``: the shared copy next to the repo).
        out_dir: where models and ``results.json`` go.
        command: the command line, recorded with every result.
        progress: show tqdm bars.
    """

    def __init__(
        self,
        cfg: Mapping[str, Any],
        seed: int,
        data_dir: str | os.PathLike | None,
        out_dir: str | os.PathLike,
        command: str = "",
        progress: bool = True,
    ):
        self.cfg = cfg
        self.seed = seed
        self.out_dir = Path(out_dir)
        self.model_dir = self.out_dir / f"seed{seed}"
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self.command = command
        self.progress = progress
        self.device = torch.device(str(cfg.get("device", "cpu")))
        data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        d = cfg["data"]
        data = load_mnist(data_dir, d["val_size"], d["split_seed"], d.get("train_limit"), d.get("test_limit"))
        self.data: Mnist = Mnist(*(t.to(self.device) for t in vars(data).values()))
        self._teacher_logits: torch.Tensor | None = None
        self._teacher_model: MLP | None = None
        self.records: list[dict[str, Any]] = []

    # -- bookkeeping

    def log(self, msg: str) -> None:
        if self.progress:
            print(f"[mnist seed={self.seed}] {msg}", flush=True)

    def _model_seed(self, name: str) -> int:
        return self.seed * 1_000_003 + zlib.crc32(name.encode()) % 1_000_003

    def _save(self, name: str, model: MLP, spec: dict[str, Any], record: dict[str, Any]) -> None:
        path = self.model_dir / f"{name}.pt"
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        payload = {"state_dict": state, "spec": spec, "record": record}
        write_atomic(path, lambda tmp: torch.save(payload, tmp))

    def _load(
        self, name: str, spec: dict[str, Any], model_dir: Path | None = None
    ) -> tuple[MLP, dict[str, Any]] | None:
        path = (model_dir or self.model_dir) / f"{name}.pt"
        if not path.exists():
            return None
        payload = torch.load(path, weights_only=False, map_location="cpu")
        if canonical_spec(payload["spec"]) != canonical_spec(spec):
            raise RecipeError(
                f"{path} was trained with another configuration:\n  stored {payload['spec']}\n  "
                f"asked  {spec}\nUse another --out-dir, or delete that file to retrain it."
            )
        model = MLP(spec["sizes"], spec.get("dropout_input", 0.0), spec.get("dropout_hidden", 0.0))
        model.load_state_dict(payload["state_dict"])
        return model.to(self.device), payload["record"]

    def record(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append (replace by ``name``) a result in ``results.json``, written atomically."""
        path = self.out_dir / "results.json"
        with open(self.out_dir / "results.lock", "w") as lock:  # several runs may share out_dir
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = json.loads(path.read_text()) if path.exists() else {"runs": []}
            key = (record["seed"], record["name"])
            data["runs"] = [r for r in data["runs"] if (r["seed"], r["name"]) != key] + [record]
            write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1)))
        self.records.append(record)
        return record

    def fit(
        self,
        name: str,
        spec: dict[str, Any],
        x: torch.Tensor,
        y: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
        teacher: MLP | None = None,
        init: dict[str, torch.Tensor] | None = None,
        val: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[MLP, dict[str, Any]]:
        """Train (or load) the model ``name`` described by ``spec``.

        ``init``: starting weights (a state dict; default: random); ``val``: the validation
        images and labels of model selection (default: the validation split as it is).
        """
        loaded = self._load(name, spec)
        if loaded is not None:
            self.log(f"{name}: found {self.model_dir / (name + '.pt')}, skipping training")
            return loaded
        model_seed = self._model_seed(name)
        torch.manual_seed(model_seed)
        model = MLP(spec["sizes"], spec.get("dropout_input", 0.0), spec.get("dropout_hidden", 0.0)).to(self.device)
        if init is not None:
            model.load_state_dict(init)
        tc = train_config(spec, self.progress, name)
        distill = None
        if teacher_logits is not None or teacher is not None:
            distill = DistillationLoss(
                temperature=spec["temperature"], hard_weight=spec["hard_weight"], soft_weight=spec["soft_weight"]
            )
        self.log(f"{name}: training {spec['sizes']} on {len(x)} examples; {distill or 'cross-entropy'}")
        ckpt = self._checkpoint_path(name, spec)
        if ckpt.exists():
            self.log(f"{name}: resuming the interrupted run from {ckpt}")
        run = train(
            model,
            x,
            y,
            val or (self.data.val_x, self.data.val_y),
            tc,
            model_seed,
            teacher_logits,
            distill,
            teacher,
            checkpoint=ckpt,
        )
        record = self.fit_record(name, spec, run, len(x))
        self._save(name, model, spec, record)
        shutil.rmtree(ckpt.parent, ignore_errors=True)
        return model, record

    def fit_record(self, name: str, spec: Mapping[str, Any], run: TrainResult, transfer_size: int) -> dict[str, Any]:
        """What ``results.json`` keeps of a finished training."""
        return {
            "seed": self.seed,
            "name": name,
            "sizes": spec["sizes"],
            "formula": run.formula,
            "temperature": spec.get("temperature"),
            "transfer_size": transfer_size,
            "epochs": spec["epochs"],
            "best_epoch": run.best_epoch,
            "val_errors": run.best_val_errors,
            "val_n": len(self.data.val_y),
            "loss_history": run.history["loss"],
            "val_history": run.history["val_errors"],
            "train_seconds": round(run.seconds, 1),
            "command": self.command,
            "machine": machine(str(self.device)),
            "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        }

    def _checkpoint_path(self, name: str, spec: dict[str, Any]) -> Path:
        """Per-epoch checkpoint of ``name``; one of other settings (an older config) is removed."""
        key = hashlib.sha256(json.dumps(canonical_spec(spec), sort_keys=True).encode()).hexdigest()[:12]
        folder = self.model_dir / "checkpoints" / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.ckpt"):
            if old.name != f"{key}.ckpt":
                self.log(f"{name}: removing {old}, an interrupted run with other settings")
                old.unlink()
        return folder / f"{key}.ckpt"

    def score(self, model: MLP, record: dict[str, Any], experiment: str, **extra: Any) -> dict[str, Any]:
        """Score ``model`` once on the test set and record it."""
        errors = count_errors(model, self.data.test_x, self.data.test_y)
        out = {**record, "experiment": experiment, "test_errors": errors, "test_n": len(self.data.test_y), **extra}
        self.log(
            f"{record['name']}: test errors {errors}/{len(self.data.test_y)} "
            f"(val {record['val_errors']}/{record['val_n']}, {record['train_seconds']:.0f} s)"
        )
        return self.record(out)

    # -- models

    def teacher(self) -> MLP:
        """The teacher, trained (or loaded) on ``teacher.train_set``: ``train`` (50,000 images, best epoch on
        validation) or ``train+val`` (the paper's 60,000, labels included, the last epoch kept)."""
        if self._teacher_model is None:
            spec = dict(self.cfg["teacher"])
            x, y = self.data.train_x, self.data.train_y
            train_set = spec.get("train_set", "train")
            if train_set not in ("train", "train+val"):
                raise RecipeError(f"teacher.train_set must be 'train' or 'train+val', got {train_set!r}")
            if train_set == "train+val":  # no held-out image is left to choose an epoch
                spec["select"] = "last"
                x, y = torch.cat([x, self.data.val_x]), torch.cat([y, self.data.val_y])
            model, record = self.fit("teacher", spec, x, y)
            if not any(r["name"] == "teacher" for r in self.records):
                self.score(model, record, "main")
            self._teacher_model = model.eval()
        return self._teacher_model

    def teacher_logits(self) -> torch.Tensor:
        """The teacher's logits on the (un-jittered) transfer set, computed once."""
        if self._teacher_logits is None:
            self._teacher_logits = logits_of(self.teacher(), self.data.train_x)
        return self._teacher_logits

    def student(
        self,
        name: str,
        width_key: str,
        temperature: float | None,
        hard_weight: float,
        keep: torch.Tensor | None = None,
        transfer_jitter: int = 0,
        ensemble: Sequence[int] = (),
        with_val: bool = False,
    ) -> tuple[MLP, dict[str, Any]]:
        """Train a student: hard labels when ``temperature`` is None, else distilled.

        ``keep`` is a boolean mask over the training split: the transfer set.
        ``transfer_jitter`` > 0 shifts the transfer images by up to that many pixels in
        every batch, and the teacher's soft targets are computed on the shifted images.
        ``ensemble``: seeds whose teachers, combined, give the soft targets instead.
        ``with_val``: the validation images join the transfer set (the paper distilled on all
        60,000 training images); their labels stay unused, so only a soft-target student may,
        and it keeps its last epoch, as no held-out images are left to choose one.
        """
        spec = dict(self.cfg[width_key])
        x, y = self.data.train_x, self.data.train_y
        if with_val:
            if temperature is None or hard_weight > 0 or keep is not None or ensemble:
                raise RecipeError(
                    f"{name}: the validation images join only a soft-target student's transfer set "
                    "(no hard term, no class subset, one teacher); use distill.variants=[soft]"
                )
            spec.update(transfer_set="train+val", select="last")
            x, y = torch.cat([x, self.data.val_x]), torch.cat([y, self.data.val_y])
        logits, teacher = None, None
        if temperature is not None:
            spec.update(
                temperature=float(temperature), hard_weight=hard_weight, soft_weight=self.cfg["distill"]["soft_weight"]
            )
            if ensemble:
                spec.update(teacher_ensemble=list(ensemble), ensemble_method=self.cfg["ensemble"]["method"])
                logits = self.ensemble_log_probs(self.data.train_x)
            elif transfer_jitter:
                spec["transfer_jitter"] = int(transfer_jitter)
                teacher = self.teacher()
            else:
                logits = self.teacher_logits()
                if with_val:
                    logits = torch.cat([logits, logits_of(self.teacher(), self.data.val_x)])
        if keep is not None:
            spec["transfer_classes"] = sorted(int(c) for c in torch.unique(y[keep]))
            x, y = x[keep], y[keep]
            logits = logits[keep] if logits is not None else None
        return self.fit(name, spec, x, y, logits, teacher)

    def ensemble_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """The ``ensemble.seeds`` teachers' combined log-probabilities on ``x`` (:mod:`.ensemble`)."""
        from .ensemble import ensemble_log_probs

        return ensemble_log_probs(self, x)

    # -- experiments

    def run_teacher(self) -> None:
        self.teacher()

    def run_main(self) -> None:
        self.teacher()
        t = self.cfg["distill"]["temperature"]
        w = self.cfg["student"]["sizes"][1]
        variants = {
            "hard": (f"student{w}-hard", None, 0.0),
            "soft": (f"student{w}-soft-T{t:g}", t, 0.0),
            "soft+hard": (f"student{w}-soft+hard-T{t:g}", t, self.cfg["distill"]["hard_weight"]),
        }
        wanted = list(self.cfg["distill"].get("variants", variants))
        unknown = set(wanted) - set(variants)
        if unknown:
            raise RecipeError(f"distill.variants: unknown {sorted(unknown)}; known: {list(variants)}")
        transfer_set = self.cfg["distill"].get("transfer_set", "train")
        if transfer_set not in ("train", "train+val"):
            raise RecipeError(f"distill.transfer_set must be 'train' or 'train+val', got {transfer_set!r}")
        with_val = transfer_set == "train+val"
        if with_val and any(variants[k][1] is None or variants[k][2] > 0 for k in wanted):
            raise RecipeError(
                "distill.transfer_set=train+val: the validation labels must stay unseen, so only the soft-target "
                f"student may use it; got distill.variants={wanted}, use [soft]"
            )
        tag = "-trainval" if with_val else ""
        for key in wanted:
            name, temp, hw = variants[key]
            model, rec = self.student(name + tag if temp is not None else name, "student", temp, hw, with_val=with_val)
            self.score(model, rec, "main")
        j = int(self.cfg["distill"].get("transfer_jitter", 0))
        if j:
            name = f"student{w}-soft-T{t:g}-jitter{j}{tag}"
            model, rec = self.student(name, "student", t, 0.0, transfer_jitter=j, with_val=with_val)
            self.score(model, rec, "main")

    def run_sweep(self) -> None:
        for width_key in self.cfg["sweep"]["students"]:
            w = self.cfg[width_key]["sizes"][1]
            model, rec = self.student(f"student{w}-hard", width_key, None, 0.0)
            self.score(model, rec, "sweep")
            for t in self.cfg["sweep"]["temperatures"]:
                model, rec = self.student(f"student{w}-soft-T{t:g}", width_key, t, 0.0)
                self.score(model, rec, "sweep")

    def run_omit3(self) -> None:
        run_omit3(self)

    def run_only78(self) -> None:
        run_only78(self)

    def run_ensemble(self) -> None:
        from .ensemble import run_ensemble

        run_ensemble(self)

    def run_specialists(self) -> None:
        from .specialists import run_specialists

        run_specialists(self)

    def run_online(self) -> None:
        from .online import run_online

        run_online(self)

    def run(self, experiments: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Run the experiments (default: the config's) and return their result records."""
        for exp in experiments or self.cfg["experiments"]:
            if exp not in EXPERIMENTS:
                raise RecipeError(f"unknown experiment {exp!r}; known: {list(EXPERIMENTS)}")
            self.log(f"experiment {exp}")
            getattr(self, f"run_{exp}")()
        return self.records
