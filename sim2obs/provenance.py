"""Provenance helpers: package versions, git commit, stable hashing of configs."""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

_TRACKED = ("sim2obs", "numpy", "h5py", "astropy", "galsim", "scipy", "dask", "distributed",
            "torch", "lightgbm", "scikit-learn", "hydra-core", "omegaconf", "illustris_python")


def package_versions(names: Iterable[str] = _TRACKED) -> dict[str, str]:
    """Installed versions of ``names`` (missing packages are left out), plus the Python version."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit(path: str | Path | None = None) -> str | None:
    """The git commit of the sim2obs source tree, or None outside a checkout."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    """sha256 hex digest of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal configs give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stable_hash(obj: Any, length: int = 16) -> str:
    """Short sha256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]
