"""The MNIST recipe's config: experiments, presets and overrides, model specs, the machine line.

Example
-------
>>> load_config(default_config_path(), "smoke")["teacher"]["epochs"]
6
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, read_config
from ..distill.ensemble import METHODS as ENSEMBLE_METHODS
from ..io import drop_defaults
from .mnist import repo_root

EXPERIMENTS = ("teacher", "main", "sweep", "omit3", "only78", "ensemble", "online", "specialists")


class RecipeError(ConfigError):
    """A problem with the recipe's input (config, data, output dir), explained with its fix."""


def load_config(path: str | os.PathLike, preset: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``base`` merged with ``presets[preset]``, then the ``key=value`` overrides."""
    try:
        cfg = read_config(path, preset, overrides)
    except ConfigError as err:
        raise RecipeError(str(err)) from None
    unknown = set(cfg["experiments"]) - set(EXPERIMENTS)
    if unknown:
        raise RecipeError(f"unknown experiment(s) {sorted(unknown)}; known: {list(EXPERIMENTS)}")
    method = cfg.get("ensemble", {}).get("method", "geometric")
    if method not in ENSEMBLE_METHODS:
        raise RecipeError(f"ensemble.method must be one of {list(ENSEMBLE_METHODS)}, got {method!r}")
    device = str(cfg.get("device", "cpu"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RecipeError(f"device {device!r} asked for, but torch sees no CUDA GPU; use --set device=cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise RecipeError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    return cfg


#: Spec keys added after models were first saved, with the value that older models used.
#: A spec equal to its default is left out before specs are compared, so those models load.
SPEC_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",
    "transfer_jitter": 0,
    "transfer_set": "train",
    "train_set": "train",
    "select": "best",
}
SGD_KEYS = ("momentum", "momentum_final", "momentum_epochs")


def canonical_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` without settings that do not change training (defaults; SGD momenta under Adam).

    >>> canonical_spec({"lr": 1e-3, "optimizer": "adam", "momentum": 0.5})
    {'lr': 0.001}
    >>> canonical_spec({"lr": 1.0, "optimizer": "sgd", "momentum": 0.5})
    {'lr': 1.0, 'optimizer': 'sgd', 'momentum': 0.5}
    """
    out = drop_defaults(spec, SPEC_DEFAULTS)
    if out.get("optimizer", "adam") == "adam":
        for k in SGD_KEYS:
            out.pop(k, None)
    return out


def machine(device: str = "cpu") -> str:
    """A one-line description of where this runs (for the results table)."""
    out = f"{platform.machine()} CPU, {os.cpu_count()} cores, torch threads={torch.get_num_threads()}"
    if device.startswith("cuda"):
        out += f", GPU {torch.cuda.get_device_name(torch.device(device))}"
    return out


def default_config_path() -> Path:
    return repo_root() / "recipes" / "mnist" / "config.yaml"
