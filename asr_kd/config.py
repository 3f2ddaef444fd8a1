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
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

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


def _kind(value: Any) -> str:
    """The kind of a config value, as a user would name it (an int is a number too)."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a section"
    return type(value).__name__


def check_value(key: str, default: Any, value: Any, where: str = "") -> None:
    """Refuse ``value`` for ``key`` when it is not of the kind of the default (``None``: anything).

    >>> check_value("train.epochs", 12, 20)
    >>> check_value("train.lr", 0.001, 1)           # an int is a number too
    >>> check_value("train.epochs", 12, "six")
    Traceback (most recent call last):
    asr_kd.config.ConfigError: train.epochs: expected a number (like 12), got text 'six'
    """
    if default is None or value is None and not isinstance(default, Mapping):
        return
    if _kind(default) != _kind(value):
        raise ConfigError(f"{where}{key}: expected {_kind(default)} (like {default!r}), got {_kind(value)} {value!r}")


T = TypeVar("T", bound="Section")


@dataclasses.dataclass(frozen=True)
class Section:
    """A config section: a frozen dataclass of fields with defaults; :meth:`from_dict` checks keys and kinds
    (the ASR recipe's :mod:`asr_kd.asr.settings`)."""

    OPEN: ClassVar[tuple[str, ...]] = ()  #: fields holding free-form mappings (any keys), e.g. per-teacher overrides

    @classmethod
    def from_dict(cls: type[T], d: Mapping[str, Any] | None, where: str = "", prefix: str = "") -> T:
        d = dict(d or {})
        known = {f.name: f for f in fields(cls)}
        for key in d:
            if key not in known:
                raise ConfigError(f"{where}unknown key {prefix + key!r}; known here: {sorted(known)}")
        values = {}
        for name, f in known.items():
            default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            if name not in d:
                continue
            value = d[name]
            if isinstance(default, Section):
                values[name] = type(default).from_dict(value, where, f"{prefix}{name}.")
                continue
            check_value(prefix + name, default, value, where)
            values[name] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_keys(node: Mapping[str, Any], schema: Mapping[str, Any], where: str, prefix: str = "") -> None:
    """Every key of ``node`` must exist in ``schema``, with a value of the same kind.

    A section that is empty in ``schema`` (``{}``) is open: any keys may go there.

    >>> check_keys({"train": {"epochs": 3}}, {"train": {"epochs": 12, "lr": 0.1}}, "cfg.yaml: ")
    >>> check_keys({"train": {"epoch": 3}}, {"train": {"epochs": 12, "lr": 0.1}}, "cfg.yaml: ")
    Traceback (most recent call last):
    asr_kd.config.ConfigError: cfg.yaml: unknown key 'train.epoch'; known here: ['epochs', 'lr']
    """
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if key not in schema:
            raise ConfigError(f"{where}unknown key {dotted!r}; known here: {sorted(schema)}")
        check_value(dotted, schema[key], value, where)
        if isinstance(value, Mapping) and schema[key]:
            check_keys(value, schema[key], where, dotted + ".")


def apply_override(cfg: dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override (value parsed as YAML) in place.

    The key must exist and the value must be of the kind of the value it replaces
    (:func:`check_value`). A section given as a value is merged into the section it names, so
    ``train={epochs: 3}`` keeps the preset's other ``train`` keys, as ``train.epochs=3`` does.

    >>> cfg = {"train": {"epochs": 20, "lr": 0.01}}
    >>> apply_override(cfg, "train={epochs: 3}")
    >>> cfg
    {'train': {'epochs': 3, 'lr': 0.01}}
    """
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
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({err.problem or err})") from None
    check_value(key, node[parts[-1]], value, where=f"override {item!r}: ")
    if isinstance(value, Mapping) and node[parts[-1]]:
        check_keys(value, node[parts[-1]], f"override {item!r}: ", key + ".")
    node[parts[-1]] = merge(node[parts[-1]], value) if isinstance(value, Mapping) else value


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
    except IsADirectoryError:
        raise ConfigError(f"{path}: a folder, not a config file; give the path of a recipe's config.yaml") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; give the path of a recipe's config.yaml") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("base"), dict):
        raise ConfigError(f"{path}: a recipe config needs a top-level 'base:' section (and optional 'presets:')")
    presets = raw.get("presets") or {}
    if preset is not None and preset not in presets:
        raise ConfigError(f"{path}: no preset {preset!r}; choose one of {sorted(presets)}")
    for name, over in presets.items():
        if not isinstance(over, Mapping):
            raise ConfigError(f"{path}: preset {name!r} must be a section of keys to override")
        check_keys(over, raw["base"], f"{path}: preset {name!r}: ")
    cfg = merge(raw["base"], (presets.get(preset) or {}) if preset is not None else {})
    for item in overrides:
        apply_override(cfg, item)
    cfg["preset"] = preset
    cfg["overrides"] = list(overrides)
    return cfg


def repo_root() -> Path:
    """The project's root folder (the one holding ``recipes/``)."""
    return Path(__file__).resolve().parents[1]


def recipe_config_path(recipe: str) -> Path:
    """The config of recipe ``recipe`` (a folder name under ``recipes/``).

    >>> recipe_config_path("mnist").relative_to(repo_root()).as_posix()
    'recipes/mnist/config.yaml'
    """
    return repo_root() / "recipes" / recipe / "config.yaml"
