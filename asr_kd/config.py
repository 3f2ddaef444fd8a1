"""Recipe configs: one YAML per recipe, ``base`` plus named ``presets``, plus overrides.

A recipe never copies its config to make a variant: a preset overrides a few keys of
``base``, and ``key.sub=value`` items (from ``--set`` on the command line) override
anything after that. Overrides may only name keys that exist, so a typo fails loudly.

Example
-------
>>> cfg = merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}})
>>> cfg
{'a': {'b': 1, 'c': 3}}
>>> apply_override(cfg, "a.b=0.5"); cfg["a"]["b"]
0.5
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from .errors import UserError


class ConfigError(UserError):
    """A problem with a config or its overrides, explained with its fix."""


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: ``over`` wins; nested mappings are merged, not replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_override(cfg: dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override (value parsed as YAML) in place."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value (e.g. student.epochs=10)")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    node = cfg
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            raise ConfigError(f"override {item!r}: {p!r} is not a section of the config")
        node = node[p]
    if parts[-1] not in node:
        raise ConfigError(f"override {item!r}: unknown key {key!r}; known here: {sorted(node)}")
    node[parts[-1]] = yaml.safe_load(raw)


def read_config(path: str | os.PathLike, preset: str | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``base`` merged with ``presets[preset]`` (None: base alone), then the overrides.

    The chosen preset's name is stored under ``"preset"``.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file; give the path of a recipe's config.yaml") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("base"), dict):
        raise ConfigError(f"{path}: a recipe config needs a top-level 'base:' section (and optional 'presets:')")
    presets = raw.get("presets") or {}
    if preset is not None and preset not in presets:
        raise ConfigError(f"{path}: no preset {preset!r}; choose one of {sorted(presets)}")
    cfg = merge(raw["base"], (presets.get(preset) or {}) if preset is not None else {})
    for item in overrides:
        apply_override(cfg, item)
    cfg["preset"] = preset
    cfg["overrides"] = list(overrides)
    return cfg


def write_atomic(path: str | os.PathLike, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: concurrent writers never share it
    write(tmp)
    os.replace(tmp, path)
