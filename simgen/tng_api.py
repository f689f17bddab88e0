"""IllustrisTNG web-API client (https://www.tng-project.org/data/docs/api/) and cutout reader.

:class:`TNGWebAPI` fetches subhalo records, searches and per-subhalo particle cutouts with the
``api-key`` header the TNG docs specify. JSON answers are cached on disk keyed by URL; cutouts
are cached under ``cache_dir/<simulation>/snap_<NNN>/``. Every request goes through the suite's
download layer (:mod:`sim2obs.download`): retries with exponential backoff on transient errors
(5xx, 408, 429, timeouts, dropped connections), cutouts streamed to a ``.part`` file (resumed
with an HTTP Range request after a kill when the server answers 206, restarted otherwise),
validated with h5py and renamed into place atomically; their sha256 and size go to
``index.json`` in the same folder, and a cached file whose checksum no longer matches is
downloaded again. Parallel workers may share a cache: per-file locks (``fcntl.flock``) keep
two processes from writing the same cutout or index at once.

:func:`read_cutout` turns a cutout file into the particle dict of the TNG spec (code units:
ckpc/h, 1e10 Msun/h, km/s sqrt(a)). :data:`STAR_FIELDS`, :data:`DM_FIELDS` and
:data:`GAS_FIELDS` are the fields the mock pipeline needs.

This module is the public entry point; the code lives in :mod:`sim2obs.simgen.tng.webapi`.
"""
from __future__ import annotations

# the names this module imported before the move stay importable from it
from sim2obs.atomic import atomic_write
from sim2obs.download import HttpClient, download_file, file_lock
from sim2obs.errors import ConfigError, DataFormatError, DownloadError, Sim2obsValueError
from sim2obs.provenance import file_sha256
from sim2obs.simgen.tng.webapi import (_KEY_HELP, _NAME_RE, DM_FIELDS, FIELD_SHAPES, GAS_FIELDS, HEADER_KEYS,
                                       PART_TYPES, PIPELINE_FIELDS, STAR_FIELDS, TNGAPIError, TNGAuthError,
                                       TNGNotFoundError, TNGWebAPI, _check_id, _check_name, _open_hdf5, _read_index,
                                       _read_type, _tng_error, log, normalise_fields, read_cutout, validate_cutout)

__all__ = ["STAR_FIELDS", "DM_FIELDS", "GAS_FIELDS", "PIPELINE_FIELDS", "PART_TYPES", "HEADER_KEYS", "FIELD_SHAPES",
           "TNGAPIError", "TNGAuthError", "TNGNotFoundError", "TNGWebAPI", "normalise_fields", "validate_cutout",
           "read_cutout"]
