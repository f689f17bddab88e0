"""IllustrisTNG web-API client and cutout reader (https://www.tng-project.org/data/docs/api/): the public
entry point; the code and its documentation live in :mod:`sim2obs.simgen.tng.webapi`.
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
