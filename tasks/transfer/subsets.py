"""Nested k subsets of a target's training ids, fixed by seed and stored (``subsets.json``).

For every (seed, target) one seeded permutation of the sorted training ids is drawn; the subset of
size k is its first k ids, so the subsets of one seed are nested (k = 30 inside k = 100 inside ...)
and a point at larger k only adds objects. A k larger than the training split is capped to its
size (``effective_ks``). The permutation's prefix is written atomically to ``subsets.json`` and
read back on every later run, so a resumed study fine-tunes on exactly the objects it started
with; ids that are no longer in the training split are refused, naming the file.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from sim2obs.atomic import atomic_write
from sim2obs.errors import DataFormatError

SUBSETS_FILE = "subsets.json"
FORMAT = "sim2obs.transfer.subsets"


def effective_ks(ks: Sequence[int], n_train: int) -> list[int]:
    """The grid's k > 0 capped by ``n_train`` (what exists), in increasing order, without repeats."""
    return sorted({min(int(k), int(n_train)) for k in ks if int(k) > 0 and n_train > 0})


def permutation(train_ids: np.ndarray, seed: int, target: str) -> np.ndarray:
    """The seeded permutation of ``train_ids`` (sorted first, so the order the set stores them in
    does not matter) for (``seed``, ``target``)."""
    ids = np.sort(np.asarray(train_ids, dtype=np.int64))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(str(target).encode())]))
    return ids[rng.permutation(len(ids))]


def nested_subsets(train_ids: np.ndarray, ks: Sequence[int], seed: int, target: str) -> dict[int, np.ndarray]:
    """``{k: ids}`` for every effective k: prefixes of :func:`permutation` (nested)."""
    order = permutation(train_ids, seed, target)
    return {k: order[:k] for k in effective_ks(ks, len(order))}


class SubsetStore:
    """``subsets.json`` of a study folder: ``{"format", "seeds": {seed: {target: {"content_hash",
    "n_train", "ks", "order"}}}}`` where ``order`` is the permutation's prefix up to the largest k.
    An entry is reused for the same set (content hash) and k grid; another set (the target's data
    changed) draws again."""

    def __init__(self, study_dir: str | Path):
        self.path = Path(study_dir) / SUBSETS_FILE

    def _read(self) -> dict:
        if not self.path.exists():
            return {"format": FORMAT, "seeds": {}}
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise DataFormatError(self.path, None, f"not valid JSON ({exc})") from None
        if data.get("format") != FORMAT or not isinstance(data.get("seeds"), dict):
            raise DataFormatError(self.path, "format", f"not a {FORMAT} file")
        return data

    def subsets(self, seed: int, target: str, train_ids: np.ndarray, ks: Sequence[int],
                content_hash: str | None = None) -> dict[int, np.ndarray]:
        """The nested subsets of (seed, target): read from the file when it holds them for this set
        (``content_hash``) and these k, else drawn (:func:`nested_subsets`) and added to the file
        atomically. Stored ids missing from ``train_ids`` (an edited or foreign file) are refused."""
        train_ids = np.asarray(train_ids, dtype=np.int64)
        want = effective_ks(ks, len(train_ids))
        data = self._read()
        entry = data["seeds"].get(str(int(seed)), {}).get(str(target))
        if entry is not None and entry.get("content_hash") == content_hash and set(want) <= set(entry["ks"]):
            order = np.asarray(entry["order"], dtype=np.int64)
            missing = np.setdiff1d(order, train_ids)
            if len(missing):
                raise DataFormatError(self.path, f"seeds.{seed}.{target}.order",
                                      f"{len(missing)} stored id(s) are not in the target's training split "
                                      f"(e.g. {missing[:5].tolist()}): the set changed; delete the study folder "
                                      "or use another study name")
            return {k: order[:k] for k in want}
        subsets = nested_subsets(train_ids, ks, seed, target)
        order = permutation(train_ids, seed, target)[:max(want, default=0)]
        data = self._read()  # re-read just before writing: another seed's process may have added its own
        data["seeds"].setdefault(str(int(seed)), {})[str(target)] = {
            "content_hash": content_hash, "n_train": int(len(train_ids)), "ks": want, "order": order.tolist()}
        text = json.dumps(data, indent=1) + "\n"
        atomic_write(self.path, lambda f: f.write(text), mode="w")
        return subsets
