"""The library's frozen config dataclasses as Hydra structured configs.

Every value is declared once, as a field of a library dataclass (``ModelSpec``,
``MCTSConfig``, ``PoolConfig``, ...). OmegaConf cannot merge into a frozen dataclass (it makes
the node read-only), so :func:`schema_of` derives, mechanically from the library class, a plain
dataclass with the same fields, defaults and docs, whose types OmegaConf understands (tuples
become lists, unions of a dataclass and something else become that dataclass). Composition
type-checks every value against it (``search.num_simulations=abc`` fails naming the key);
:func:`to_library` ends in ``OmegaConf.to_object`` and rebuilds the library classes from it, so
each class's own ``__post_init__`` validation runs before anything starts; its errors are
re-raised as :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
from collections import abc
import functools
import logging
import pathlib
import sys
import types
import typing
from typing import Any, Dict, List, Optional, TypeVar, Union

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

T = TypeVar("T")

_SCALARS = (int, float, str, bool)


class ConfigError(ValueError):
    """A config value is out of range or inconsistent; the message names the key."""


def _schema_type(hint: Any) -> tuple[Any, Any]:
    """``(OmegaConf type, library dataclass or None)`` for one field's type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return schema_of(hint), hint
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        optional = len(members) < len(args)
        classes = [a for a in members if dataclasses.is_dataclass(a)]
        if len(members) == 1 or len(classes) == 1:
            inner, lib = _schema_type(classes[0] if classes else members[0])
            return (Optional[inner] if optional else inner), lib
        return Any, None
    if origin in (tuple, list, abc.Sequence) or hint in (tuple, list):
        item = args[0] if args and args[0] is not Ellipsis else Any
        item = item if item in _SCALARS else Any
        return List[item], None
    if origin in (dict, abc.Mapping) or hint is dict:
        key, value = args if args else (str, Any)
        return Dict[key, value if value in _SCALARS else Any], None
    if hint in _SCALARS or hint is Any:
        return hint, None
    if hint is pathlib.Path:
        return str, None
    return Any, None


def _schema_default(f: dataclasses.Field, schema_type: Any) -> dataclasses.Field:
    if f.default_factory is not dataclasses.MISSING:
        made = f.default_factory()
        if dataclasses.is_dataclass(made):
            return dataclasses.field(default_factory=schema_of(type(made)))
        return dataclasses.field(default_factory=lambda: _plain(f.default_factory()))
    if f.default is dataclasses.MISSING:
        return dataclasses.field(default=MISSING)
    if isinstance(f.default, (tuple, list, dict)):
        value = f.default
        return dataclasses.field(default_factory=lambda: _plain(value))
    return dataclasses.field(default=f.default)


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@functools.cache
def schema_of(cls: type) -> type:
    """The OmegaConf-friendly twin of the frozen library dataclass ``cls`` (same fields and defaults)."""
    hints = typing.get_type_hints(cls)
    spec = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        schema_type, _ = _schema_type(hints[f.name])
        spec.append((f.name, schema_type, _schema_default(f, schema_type)))
    twin = dataclasses.make_dataclass(f"{cls.__name__}Schema", spec)
    twin.__doc__ = cls.__doc__
    twin.__library_class__ = cls
    return twin


def _rebuild(value: Any, key: str) -> Any:
    lib = getattr(type(value), "__library_class__", None)
    if lib is not None:
        kwargs = {f.name: _rebuild(getattr(value, f.name), f"{key}.{f.name}".lstrip("."))
                  for f in dataclasses.fields(value)}
        try:
            return lib(**kwargs)
        except (TypeError, ValueError) as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"invalid `{key or lib.__name__}` config: {err}") from err
    if isinstance(value, list):
        return tuple(_rebuild(v, key) for v in value)
    if isinstance(value, dict):
        return {k: _rebuild(v, key) for k, v in value.items()}
    return value


def to_library(cfg: DictConfig, cls: type[T]) -> T:
    """The composed config ``cfg`` (of ``schema_of(cls)``) as a validated ``cls`` instance.

    Raises:
        ConfigError: a mandatory value is missing, or a library class rejected a value (the
            message names the group, e.g. ``invalid `search` config: MCTSConfig.epsilon ...``).
    """
    missing = sorted(k for k in cfg if OmegaConf.is_missing(cfg, k))
    if missing:
        raise ConfigError(f"{missing[0]} is required: set it on the command line "
                          f"({missing[0]}=...); missing: {missing}")
    obj = OmegaConf.to_object(cfg)
    if getattr(type(obj), "__library_class__", None) is not cls:
        raise ConfigError(f"config is a {type(obj).__name__}, expected {cls.__name__}'s schema")
    return _rebuild(obj, "")


def register(name: str, cls: type) -> None:
    """Store ``schema_of(cls)`` as ``name`` and each dataclass field's schema as ``<field>/<field>_schema``."""
    cs = ConfigStore.instance()
    cs.store(name=name, node=schema_of(cls))
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        _, lib = _schema_type(hints[f.name])
        if lib is not None:
            cs.store(group=f.name, name=f"{f.name}_schema", node=schema_of(lib))


def job_settings(cfg: DictConfig, cls: type[T]) -> T:
    """An entry point's first step: set the ``drllm`` log level from ``cfg.log_level`` and build
    the job's validated settings; a bad value ends the process with the key named."""
    logging.getLogger("drllm").setLevel(cfg.log_level)
    try:
        return to_library(cfg, cls)
    except ConfigError as err:
        sys.exit(f"config error: {err}")
