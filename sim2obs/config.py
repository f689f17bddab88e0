"""Typed configs: merge user settings (dict, OmegaConf node, YAML-loaded data) onto a dataclass."""
from __future__ import annotations

import difflib
from dataclasses import fields, is_dataclass
from typing import Any, Mapping, TypeVar

from sim2obs.errors import ConfigError

T = TypeVar("T")


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
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), OmegaConf.create(data)))
    except OmegaConfBaseException as exc:
        key = str(getattr(exc, "full_key", None) or "")
        key = key[len(prefix) + 1:] if key.startswith(prefix + ".") else key
        raise ConfigError(f"{prefix}.{key}".rstrip("."), str(exc).splitlines()[0]) from None
