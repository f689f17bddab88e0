"""Typed configs: merge user settings (dict, OmegaConf node, YAML-loaded data) onto a dataclass.

Two rules keep a user's own classes usable from config:

- **A node that names a** ``_target_`` **is taken as given, never merged.** In
  :func:`coerce_dataclass` a mapping with a ``_target_`` (or a ``data`` mapping with ``path`` or
  ``generator``) replaces the dataclass default instead of being merged onto it; on the command line (:func:`replace_user_nodes`) setting a node's
  ``_target_`` (or the whole node, ``key={...}``) starts a new node holding only the keys the
  user's overrides give. The same holds for a task's ``data`` node when ``data.path`` (a real set)
  or ``data.generator`` is set. So ``model._target_=mypkg.nets.MyNet`` builds ``MyNet()`` with no
  arguments, and ``+model.width=32`` adds one.
- **Task shapes are interpolations:** ``${task_spec:KEY}`` (KEY: ``in_channels``, ``stamp``,
  ``n_outputs``, ``n_targets``, ``input_channels``; :data:`TASK_SPEC_KEYS`) stays unresolved
  while Hydra composes and is filled in by the task from its :meth:`~sim2obs.tasks.base.Task.spec`
  (:func:`fill_task_spec`).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import fields, is_dataclass
from typing import Any, Mapping, Sequence, TypeVar

from sim2obs.errors import ConfigError

T = TypeVar("T")

#: keys ``${task_spec:KEY}`` may name (see :class:`sim2obs.models.conformance.TaskSpec`)
TASK_SPEC_KEYS = ("in_channels", "stamp", "n_outputs", "num_outputs", "n_targets", "input_channels")
_TASK_SPEC = re.compile(r"^\$\{task_spec:\s*([A-Za-z_]+)\s*\}$")
#: keys that, set by the user, make a ``data`` node a new node (a real set, or another generator)
DATA_IDENTITY_KEYS = ("path", "generator")


def _deferred_task_spec(key: str) -> str:
    """The ``task_spec`` resolver while a config is composed: keeps the interpolation text, which
    the task fills in from its spec (resolver output is not resolved again by OmegaConf)."""
    return "${task_spec:" + str(key) + "}"


def register_resolvers() -> None:
    """Register the ``task_spec`` resolver with OmegaConf (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("task_spec"):
        OmegaConf.register_new_resolver("task_spec", _deferred_task_spec)


def has_task_spec(obj: Any) -> bool:
    """Whether plain config data holds a ``${task_spec:KEY}`` interpolation."""
    if isinstance(obj, str):
        return "${task_spec:" in obj
    if isinstance(obj, Mapping):
        return any(has_task_spec(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(has_task_spec(v) for v in obj)
    return False


def fill_task_spec(obj: Any, values: Mapping[str, Any], where: str = "task") -> Any:
    """Plain config data with every ``${task_spec:KEY}`` string replaced by ``values[KEY]``. An
    unknown key, or the interpolation inside a longer string, raises :class:`ConfigError`."""
    if isinstance(obj, str) and "${task_spec:" in obj:
        m = _TASK_SPEC.match(obj.strip())
        if not m:
            raise ConfigError(where, "${task_spec:KEY} must be the whole value", value=obj)
        if m.group(1) not in values:
            raise ConfigError(where, "unknown task_spec key", value=m.group(1), allowed=sorted(values))
        return values[m.group(1)]
    if isinstance(obj, Mapping):
        return {k: fill_task_spec(v, values, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [fill_task_spec(v, values, f"{where}.{i}") for i, v in enumerate(obj)]
    return obj


def replace_user_nodes(config: dict[str, Any], overrides: Sequence[str], prefix: str) -> dict[str, Any]:
    """Apply the replace rule to a composed, resolved config (plain data) of which ``prefix``
    (e.g. ``task.metallicity``) is the root, given the command-line ``overrides`` it was composed
    with. A node becomes exactly the keys the user gave when an override sets its ``_target_``
    (also inside a whole-node mapping, ``key={_target_: ...}``) or, for the ``data`` node, sets
    ``path`` or ``generator``; the values are the composed ones. Other overrides merge as in Hydra.
    Returns a new dict."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides)) if overrides else []
    head = prefix.split(".") if prefix else []
    given: dict[tuple, set] = {}  # node path -> keys the user gave under it
    for o in parsed:
        if o.is_delete() or o.package is not None:
            continue
        key = o.key_or_group.split(".")
        if key[:len(head)] != head:
            continue
        rel = tuple(key[len(head):])
        for i in range(len(rel)):
            given.setdefault(rel[:i], set()).add(rel[i])
        value = o.value()
        if rel and isinstance(value, dict):
            given.setdefault(rel, set()).update(str(k) for k in value)
    starts = set()
    for node, keys in given.items():
        if "_target_" in keys or (node == ("data",) and keys & set(DATA_IDENTITY_KEYS)):
            starts.add(node)
    out = to_plain(config)
    for node in sorted(starts, key=len):
        parent = out
        for part in node[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or not isinstance(parent.get(node[-1]), dict):
            continue
        current = parent[node[-1]]
        parent[node[-1]] = {k: v for k, v in current.items() if k in given.get(node, set())}
    return out


def to_plain(obj: Any) -> Any:
    """Dataclasses, OmegaConf nodes, mappings and tuples -> dicts, lists and scalars (JSON-able
    config data)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping) or type(obj).__name__ == "DictConfig":
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) or type(obj).__name__ == "ListConfig":
        return [to_plain(v) for v in obj]
    return obj


def coerce_dataclass(cls: type[T], cfg: Any, prefix: str) -> T:
    """``cfg`` (None, a ``cls`` instance, a mapping or an OmegaConf node) merged onto ``cls``'s
    defaults and converted to a ``cls`` instance. An unknown key (with a did-you-mean hint) or
    a wrong type raises :class:`ConfigError` naming ``prefix.key``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(cfg, cls):
        return cfg
    if cfg is None:
        cfg = {}
    data = to_plain(OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg)
    if is_dataclass(cls):
        known = [f.name for f in fields(cls)]
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{prefix}.{key}", f"unknown key{hint}", allowed=known)
    register_resolvers()
    taken = _pop_target_nodes(cls, data)
    try:
        obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), OmegaConf.create(data)))
        for path, value in taken:
            _set_path(obj, path, value)
        return obj
    except OmegaConfBaseException as exc:
        key = str(getattr(exc, "full_key", None) or "")
        key = key[len(prefix) + 1:] if key.startswith(prefix + ".") else key
        raise ConfigError(f"{prefix}.{key}".rstrip("."), str(exc).splitlines()[0]) from None



def _pop_target_nodes(cls: Any, data: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """Remove from ``data`` (in place) every mapping that names a ``_target_`` inside a
    dataclass field (and a ``data`` mapping naming ``path`` or ``generator``), returning
    ``(path, mapping)`` pairs: such nodes are set as given after the merge, so the dataclass
    default's keys never reach the user's class."""
    out: list[tuple[tuple, Any]] = []
    if not (is_dataclass(cls) and isinstance(data, dict)):
        return out
    types = {f.name: f.type for f in fields(cls)}
    hints = _field_classes(cls)
    for key in list(data):
        value = data[key]
        if isinstance(value, dict) and ("_target_" in value or (key == "data" and set(value) & set(DATA_IDENTITY_KEYS))):
            out.append(((*path, key), data.pop(key)))
        elif isinstance(value, dict) and key in types:
            sub = hints.get(key)
            if sub is not None:
                out += _pop_target_nodes(sub, value, (*path, key))
            elif all(isinstance(v, dict) for v in value.values()):  # dict[str, SomeDataclass]
                item = _dict_value_class(cls, key)
                if item is not None:
                    for k, v in value.items():
                        out += _pop_target_nodes(item, v, (*path, key, k))
    return out


def _field_classes(cls: type) -> dict[str, type]:
    import typing

    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: no nested dataclasses found
        return {}
    return {k: v for k, v in hints.items() if is_dataclass(v)}


def _dict_value_class(cls: type, key: str) -> type | None:
    import typing

    try:
        hint = typing.get_type_hints(cls).get(key)
    except Exception:
        return None
    args = typing.get_args(hint)
    return args[1] if len(args) == 2 and is_dataclass(args[1]) else None


def _set_path(obj: Any, path: tuple, value: Any) -> None:
    for part in path[:-1]:
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    if isinstance(obj, dict):
        obj[path[-1]] = value
    else:
        setattr(obj, path[-1], value)


def check_importable_target(cfg: Any, key: str) -> None:
    """Refuse a model config whose ``_target_`` is missing or cannot be imported."""
    from hydra.utils import get_object

    target = cfg.get("_target_") if isinstance(cfg, Mapping) else None
    if not target:
        raise ConfigError(f"{key}._target_", "a model config needs a _target_ (the class to build)", value=cfg)
    try:
        get_object(str(target))
    except Exception as exc:  # ImportError, AttributeError, or the user's module failing on import
        cause = exc.__cause__ or exc
        raise ConfigError(f"{key}._target_", f"cannot import {target!r} ({type(cause).__name__}: {cause}); is its "
                          "package installed or on PYTHONPATH?", value=str(target)) from None
