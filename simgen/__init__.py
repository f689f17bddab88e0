"""Generators of galaxy sets.

``GENERATORS.get(name)`` is the generator's module: ``generate(config, out, cluster=...)``
writes a set, ``coerce_config(config)`` validates a config and fills its defaults.
:func:`prepare_set` is the one way the suite turns a generator config into a set on disk.

- ``galsim``: bulge + disk mock galaxies (:mod:`sim2obs.simgen.galsim_bulge_disk`);
- ``tng``: TNG100-style mocks (images, colour and kinematic maps) of IllustrisTNG-format particle
  data, by default of the embedded mini-simulation (:mod:`sim2obs.simgen.tng_mocks`).
"""
from __future__ import annotations

import importlib
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

from sim2obs.config import to_plain
from sim2obs.registry import Registry

# Each generator module is imported when it is first used (PEP 562 ``__getattr__`` below): a Dask
# worker drawing GalSim stamps imports the GalSim generator only, never the TNG/numba stack.
_MODULES = {"galsim": "galsim_bulge_disk", "tng": "tng_mocks"}


class _GeneratorRegistry(Registry):
    """Generators by name; each module is imported on its first lookup."""

    def get(self, name: str) -> Any:
        item = super().get(name)
        return importlib.import_module(f"{__name__}.{item}") if isinstance(item, str) else item


GENERATORS: Registry = _GeneratorRegistry("generator")
for _name, _module in _MODULES.items():
    GENERATORS.register(_name)(_module)

__all__ = ["GENERATORS", "galsim_bulge_disk", "tng_mocks", "canonical_config", "default_set_path", "prepare_set"]


def __getattr__(name: str) -> Any:
    if name in _MODULES.values():
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def canonical_config(simgen: Any) -> dict:
    """The generator's full, validated config (defaults filled in) as a plain dict."""
    data = to_plain(simgen)
    module = GENERATORS.get(data.get("generator", "galsim"))
    return asdict(module.coerce_config(data))


def default_set_path(simgen: Any, data_dir: str | os.PathLike) -> Path:
    """``<data_dir>/<name>-<hash>``: one folder per distinct (canonical) generator config."""
    from sim2obs.provenance import stable_hash

    full = canonical_config(simgen)
    return Path(data_dir) / f"{full['name']}-{stable_hash(full, 8)}"


def prepare_set(simgen: Any, data_dir: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                cluster: Mapping[str, Any] | None = None, overwrite: bool = False, progress: bool = True,
                resolved_config: Mapping[str, Any] | None = None) -> Path:
    """Generate (or complete, or reuse) the set ``simgen`` describes, at ``out`` or at
    :func:`default_set_path` under ``data_dir``; return its path. Everything is validated
    before any work starts."""
    from sim2obs.parallel import validate_cluster_config

    data = to_plain(simgen)
    module = GENERATORS.get(data.get("generator", "galsim"))
    module.coerce_config(data)
    if cluster is not None:
        validate_cluster_config(dict(cluster))
    if out is None:
        if data_dir is None:
            raise ValueError("prepare_set needs data_dir or out")
        out = default_set_path(data, data_dir)
    return module.generate(data, out, cluster=cluster, overwrite=overwrite, progress=progress,
                           resolved_config=resolved_config)
