"""IllustrisTNG web-API client (https://www.tng-project.org/data/docs/api/) and cutout reader
(public path: :mod:`sim2obs.simgen.tng_api`).

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
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import h5py
import numpy as np

from sim2obs.atomic import atomic_write
from sim2obs.download import HttpClient, download_file, file_lock
from sim2obs.errors import ConfigError, DataFormatError, DownloadError, Sim2obsValueError
from sim2obs.provenance import file_sha256

log = logging.getLogger("sim2obs.simgen.tng_api")  # the name it logged under before the move

# --------------------------------------------------------------------------------------------
# Fields and particle types
# --------------------------------------------------------------------------------------------
STAR_FIELDS: tuple[str, ...] = (
    "Coordinates", "Velocities", "Masses", "GFM_StellarFormationTime", "GFM_Metallicity",
    "GFM_InitialMass", "GFM_StellarPhotometrics")
DM_FIELDS: tuple[str, ...] = ("Coordinates", "Velocities")
GAS_FIELDS: tuple[str, ...] = ("Coordinates", "Velocities", "Masses", "StarFormationRate")
#: Fields the mock pipeline reads, by API particle-type name.
PIPELINE_FIELDS: dict[str, tuple[str, ...]] = {"stars": STAR_FIELDS, "dm": DM_FIELDS, "gas": GAS_FIELDS}
#: API particle-type names -> snapshot ``PartTypeK`` number.
PART_TYPES: dict[str, int] = {"gas": 0, "dm": 1, "tracers": 3, "stars": 4, "bhs": 5}
#: Header attributes the pipeline needs (``MassTable`` is (6,), 1e10 Msun/h).
HEADER_KEYS: tuple[str, ...] = ("HubbleParam", "Redshift", "Time", "Omega0", "OmegaLambda",
                                "OmegaBaryon", "BoxSize", "MassTable")
#: Per-particle shape (after the leading N) of the fields whose shape is checked.
FIELD_SHAPES: dict[str, tuple[int, ...]] = {
    "Coordinates": (3,), "Velocities": (3,), "Masses": (), "GFM_StellarFormationTime": (),
    "GFM_Metallicity": (), "GFM_InitialMass": (), "GFM_StellarPhotometrics": (8,),
    "StarFormationRate": (), "ParticleIDs": (), "Density": (), "InternalEnergy": (),
}

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_KEY_HELP = ("pass TNGWebAPI(api_key=...) or set the TNG_API_KEY environment variable; your key "
             "is on https://www.tng-project.org/users/profile/ after logging in")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
class TNGAPIError(DownloadError):
    """A TNG web-API request failed. Attributes: ``url`` and ``status`` (HTTP code or None),
    ``cache_path`` where known."""

    def __init__(self, url: str, status: int | None, message: str, cache_path: Any = None,
                 hint: str | None = None):
        super().__init__(url, message, status=status, cache_path=cache_path, hint=hint)


class TNGAuthError(TNGAPIError):
    """HTTP 401/403: the server refused the api key."""


class TNGNotFoundError(TNGAPIError):
    """HTTP 404: the simulation, snapshot or subhalo does not exist."""


def _tng_error(err: DownloadError, what: str) -> TNGAPIError:
    """The download layer's error as the matching TNG error (same URL, status and cache path)."""
    if err.status in (401, 403):
        return TNGAuthError(err.url, err.status, f"HTTP {err.status}: the TNG server refused the api key "
                            f"while fetching {what}; check the key: {_KEY_HELP}", err.cache_path)
    if err.status == 404:
        return TNGNotFoundError(err.url, 404, f"{what} not found (HTTP 404)", err.cache_path)
    message = str(err.args[0]).split(f" [{err.url}]")[0]
    return TNGAPIError(err.url, err.status, message, err.cache_path, err.hint)


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------
class TNGWebAPI:
    """Client of the TNG web API with an on-disk cache.

    ``api_key``: the key (default: env ``TNG_API_KEY``); needed only when a request is sent, so
    a filled cache works offline. ``cache_dir``: default ``$SIM2OBS_DATA/tng_api`` (``SIM2OBS_DATA``
    defaults to ``sim2obs_data``). ``timeout``: seconds per socket operation. ``retries``: extra
    attempts after a transient failure, waiting ``backoff * 2**i`` s (at least a server's
    ``Retry-After``, at most ``max_backoff``). ``progress``: tqdm bars for downloads.
    """

    def __init__(self, api_key: str | None = None, base_url: str = "https://www.tng-project.org/api",
                 cache_dir: str | os.PathLike | None = None, timeout: float = 60, retries: int = 3,
                 backoff: float = 1.0, max_backoff: float = 60.0, progress: bool = False):
        self.api_key = api_key if api_key is not None else os.environ.get("TNG_API_KEY") or None
        self.base_url = base_url.rstrip("/")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else (
            Path(os.environ.get("SIM2OBS_DATA", "sim2obs_data")) / "tng_api")
        if retries < 0:
            raise Sim2obsValueError("retries must be >= 0", value=retries)
        self.timeout, self.retries = timeout, int(retries)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.progress = progress
        self._client = HttpClient(timeout=timeout, retries=retries, backoff=backoff, max_backoff=max_backoff)

    # -- URLs and requests -----------------------------------------------------------------
    def url(self, path_or_url: str, params: Mapping[str, Any] | None = None) -> str:
        """Absolute URL of an API path (relative to ``base_url``) or URL, with ``params`` added
        and the query sorted (one spelling per request, so one cache key)."""
        if re.match(r"^https?://", path_or_url):
            url = path_or_url
        else:
            url = f"{self.base_url}/{path_or_url.lstrip('/')}"
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        query += [(str(k), str(v)) for k, v in (params or {}).items()]
        return urlunsplit(parts._replace(query=urlencode(sorted(query), safe=",")))

    def _require_key(self) -> str:
        if not self.api_key:
            raise ConfigError("api_key", f"no TNG api key: {_KEY_HELP}")
        return self.api_key

    def http(self) -> HttpClient:
        """The download layer's client with this object's current timeout and retry settings
        (they may be changed after construction)."""
        c = self._client
        c.timeout, c.retries, c.backoff, c.max_backoff = self.timeout, self.retries, self.backoff, self.max_backoff
        return c

    # -- JSON --------------------------------------------------------------------------------
    def get_json(self, path_or_url: str, params: Mapping[str, Any] | None = None, *,
                 refresh: bool = False) -> Any:
        """The decoded JSON answer of an API path or URL; cached under ``cache_dir/json``
        keyed by the URL (``refresh=True`` asks the server again)."""
        url = self.url(path_or_url, params)
        return self._get_json(url, what=url, refresh=refresh)

    def _get_json(self, url: str, what: str, refresh: bool = False) -> Any:
        cache = self.cache_dir / "json" / f"{hashlib.sha256(url.encode()).hexdigest()[:40]}.json"
        if not refresh and cache.exists():
            try:
                doc = json.loads(cache.read_text())
                if doc.get("url") == url:
                    return doc["data"]
            except (OSError, ValueError, KeyError, AttributeError):
                log.warning("ignoring unreadable JSON cache file %s", cache)

        headers = {"api-key": self._require_key(), "Accept": "application/json"}
        try:
            resp = self.http().get(url, what=what, headers=headers, cache_path=cache)
        except DownloadError as err:
            raise _tng_error(err, what) from None
        with resp:
            ctype = resp.headers.get("Content-Type", "")
            body = resp.content
        if "json" not in ctype:
            raise TNGAPIError(url, resp.status_code, f"{what}: expected JSON, got Content-Type {ctype!r}")
        try:
            data = json.loads(body)
        except ValueError as err:
            raise TNGAPIError(url, resp.status_code, f"{what}: invalid JSON ({err})") from None
        atomic_write(cache, lambda f: json.dump({"url": url, "data": data}, f), mode="w")
        return data

    # -- records and searches ----------------------------------------------------------------
    def subhalo(self, simulation: str, snapshot: int, subhalo_id: int, *, refresh: bool = False) -> dict:
        """The API's subhalo record (``pos_x/y/z`` ckpc/h, ``vel_x/y/z`` km/s, ``mass_stars``
        1e10 Msun/h, ``halfmassrad_stars`` ckpc/h, ..., named as the API names them)."""
        sid = _check_id(subhalo_id)
        url = self.url(f"{_check_name(simulation)}/snapshots/{int(snapshot)}/subhalos/{sid}/")
        record = self._get_json(url, f"subhalo {sid} of {simulation} snapshot {snapshot}", refresh)
        if not isinstance(record, dict):
            raise TNGAPIError(url, None, f"subhalo {sid}: expected a JSON object, got {type(record).__name__}")
        return record

    def search_subhalos(self, simulation: str, snapshot: int, *, limit: int | None = None,
                        page_size: int = 100, refresh: bool = False, **filters: Any) -> list[int]:
        """Ids of the subhalos matching ``filters`` (API search syntax, e.g.
        ``mass_stars__gt=1.0`` in 1e10 Msun/h, ``order_by="-mass_stars"``), following the
        paginated ``next`` links. ``limit``: most ids returned (None: all); ``page_size``: the
        API's per-page ``limit``."""
        if page_size < 1 or (limit is not None and limit < 0):
            raise Sim2obsValueError("page_size must be >= 1 and limit >= 0", value=(page_size, limit))
        params = dict(filters, limit=page_size if limit is None else max(1, min(page_size, limit)))
        url: str | None = self.url(f"{_check_name(simulation)}/snapshots/{int(snapshot)}/subhalos/", params)
        what = f"subhalo search {filters} in {simulation} snapshot {snapshot}"
        ids: list[int] = []
        seen: set[str] = set()
        while url and (limit is None or len(ids) < limit):
            if url in seen:
                raise TNGAPIError(url, None, f"{what}: pagination loops")
            seen.add(url)
            page = self._get_json(url, what, refresh)
            if not isinstance(page, dict) or not isinstance(page.get("results"), list):
                raise TNGAPIError(url, None, f"{what}: expected a page with a 'results' list")
            try:
                ids.extend(int(r["id"]) for r in page["results"])
            except (KeyError, TypeError, ValueError):
                raise TNGAPIError(url, None, f"{what}: a result lacks an integer 'id'") from None
            url = self._same_scheme(page.get("next"))
        return ids if limit is None else ids[:limit]

    def _same_scheme(self, url: str | None) -> str | None:
        """A ``next`` link on our host keeps our scheme (no key sent over http by mistake)."""
        if not url:
            return None
        base, link = urlsplit(self.base_url), urlsplit(url)
        if link.hostname == base.hostname and link.scheme != base.scheme:
            link = link._replace(scheme=base.scheme, netloc=base.netloc)
        return self.url(urlunsplit(link))

    def snapshot_header(self, simulation: str, snapshot: int) -> dict:
        """Header values from the API's simulation and snapshot records, for cutouts whose
        ``Header`` lacks them: HubbleParam (``hubble``), Omega0 (``omega_0``), OmegaLambda
        (``omega_L``), BoxSize (``boxsize``, ckpc/h), MassTable (``[0, mass_dm, 0, 0, 0, 0]``,
        1e10 Msun/h), Redshift (snapshot ``redshift``), Time = 1/(1+z), and OmegaBaryon
        (``omega_B``) only where the record has it."""
        sim = self._get_json(self.url(f"{_check_name(simulation)}/"), f"simulation {simulation}")
        snap = self._get_json(self.url(f"{simulation}/snapshots/{int(snapshot)}/"),
                              f"snapshot {snapshot} of {simulation}")
        try:
            z = float(snap["redshift"])
            out = {"HubbleParam": float(sim["hubble"]), "Omega0": float(sim["omega_0"]),
                   "OmegaLambda": float(sim["omega_L"]), "BoxSize": float(sim["boxsize"]),
                   "MassTable": np.array([0.0, float(sim["mass_dm"]), 0.0, 0.0, 0.0, 0.0]),
                   "Redshift": z, "Time": 1.0 / (1.0 + z)}
        except (KeyError, TypeError, ValueError) as err:
            raise TNGAPIError(self.url(f"{simulation}/"), None,
                              f"simulation/snapshot record lacks a usable field: {err}") from None
        if sim.get("omega_B") is not None:
            out["OmegaBaryon"] = float(sim["omega_B"])
        return out

    # -- cutouts -----------------------------------------------------------------------------
    def cutout_path(self, simulation: str, snapshot: int, subhalo_id: int,
                    fields: Mapping[str, Sequence[str] | str] | None = None) -> Path:
        """Where :meth:`cutout` keeps this cutout: ``cache_dir/<sim>/snap_<NNN>/
        subhalo_<id>_<types>_<hash of the fields>.hdf5`` (the download goes to ``<that>.part``)."""
        spec = normalise_fields(fields)
        tag = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
        name = f"subhalo_{_check_id(subhalo_id)}_{'-'.join(spec)}_{tag}.hdf5"
        return self.cache_dir / _check_name(simulation) / f"snap_{int(snapshot):03d}" / name

    def cutout_url(self, simulation: str, snapshot: int, subhalo_id: int,
                   fields: Mapping[str, Sequence[str] | str] | None = None) -> str:
        """``{base}/{sim}/snapshots/{snap}/subhalos/{id}/cutout.hdf5?dm=...&stars=...``."""
        spec = normalise_fields(fields)
        return self.url(f"{_check_name(simulation)}/snapshots/{int(snapshot)}/subhalos/"
                        f"{_check_id(subhalo_id)}/cutout.hdf5", {k: ",".join(v) for k, v in spec.items()})

    def cutout(self, simulation: str, snapshot: int, subhalo_id: int,
               fields: Mapping[str, Sequence[str] | str] | None = None, *, refresh: bool = False) -> Path:
        """Path of the subhalo's particle cutout (HDF5) with ``fields`` ({API type: [field, ...]},
        types gas/dm/tracers/stars/bhs, ``"all"`` for every field; default
        :data:`PIPELINE_FIELDS`), downloaded unless the cache holds a copy whose sha256 matches
        the index. ``refresh=True`` downloads again."""
        spec = normalise_fields(fields)
        path = self.cutout_path(simulation, snapshot, subhalo_id, spec)
        url = self.cutout_url(simulation, snapshot, subhalo_id, spec)
        what = f"cutout of subhalo {int(subhalo_id)} of {simulation} snapshot {snapshot}"
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path):
            if not refresh and path.exists():
                entry = _read_index(path.parent).get(path.name)
                if entry is None:  # renamed into place, killed before the index write: adopt
                    try:
                        validate_cutout(path, spec)
                        self._record(path, url, int(subhalo_id), spec)
                        return path
                    except DataFormatError as err:
                        log.warning("cached %s is invalid (%s); downloading again", path, err)
                elif entry.get("size") == path.stat().st_size and entry.get("sha256") == file_sha256(path):
                    return path
                else:
                    log.warning("cached %s does not match its checksum in the index; downloading again", path)
            self._download(url, path, spec, what)
            self._record(path, url, int(subhalo_id), spec)
        return path

    def _record(self, path: Path, url: str, subhalo_id: int, spec: dict) -> None:
        entry = {"url": url, "subhalo_id": subhalo_id, "fields": spec, "size": path.stat().st_size,
                 "sha256": file_sha256(path), "recorded": datetime.now(timezone.utc).isoformat()}
        with file_lock(path.parent / "index.json"):
            index = _read_index(path.parent)
            index[path.name] = entry
            atomic_write(path.parent / "index.json",
                         lambda f: json.dump(index, f, indent=1, sort_keys=True), mode="w")

    def _download(self, url: str, path: Path, spec: dict, what: str) -> None:
        """Download through :func:`sim2obs.download.download_file` (``.part``, Range resume,
        retries, h5py validation of the fields, atomic rename); the caller holds the lock."""
        try:
            download_file(self.http(), url, path, what=what, headers={"api-key": self._require_key()},
                          validate=lambda part, display: validate_cutout(part, spec, display=display),
                          progress=self.progress, lock=False)
        except DownloadError as err:
            raise _tng_error(err, what) from None


# --------------------------------------------------------------------------------------------
# Cutout files
# --------------------------------------------------------------------------------------------
def normalise_fields(fields: Mapping[str, Sequence[str] | str] | None) -> dict[str, list[str]]:
    """``{API type: sorted unique fields}`` with types sorted; a comma-separated string is split.
    None -> :data:`PIPELINE_FIELDS`. Unknown types or empty/odd field names raise."""
    fields = PIPELINE_FIELDS if fields is None else fields
    out: dict[str, list[str]] = {}
    for ptype in sorted(fields):
        if ptype not in PART_TYPES:
            raise Sim2obsValueError("unknown particle type", value=ptype, allowed=sorted(PART_TYPES))
        names = fields[ptype]
        names = names.split(",") if isinstance(names, str) else list(names)
        names = sorted({str(n).strip() for n in names})
        if not names or not all(_NAME_RE.match(n) for n in names):
            raise Sim2obsValueError(f"bad field list for {ptype!r}", value=fields[ptype])
        out[ptype] = names
    if not out:
        raise Sim2obsValueError("no particle types requested", value=dict(fields))
    return out


def validate_cutout(path: str | os.PathLike, fields: Mapping[str, Sequence[str] | str] | None = None,
                    display: str | None = None) -> None:
    """Check that ``path`` opens with h5py and holds ``fields`` (default
    :data:`PIPELINE_FIELDS`) with consistent lengths and known shapes. A type whose group is
    absent (or empty) counts as zero particles unless ``Header/NumPart_ThisFile`` says otherwise.
    Raises DataFormatError naming ``display`` (default ``path``) and the field."""
    spec = normalise_fields(fields)
    with _open_hdf5(path, display) as f:
        for ptype, names in spec.items():
            _read_type(f, display or path, ptype, names, load=False)


def read_cutout(path: str | os.PathLike, header: Mapping[str, Any] | None = None, *,
                fields: Mapping[str, Sequence[str]] | None = None) -> dict:
    """The particle dict of a cutout file, in code units as stored (ckpc/h, 1e10 Msun/h,
    km/s sqrt(a)): ``{"header": {HEADER_KEYS}, "stars": {...}, "dm": {...}, "gas": {...}}`` with
    the fields of ``fields`` (default :data:`PIPELINE_FIELDS`). A missing particle type gives
    zero-length arrays of the right trailing shape (Coordinates (0, 3), ...). Header values come
    from the file's ``Header``; ``header`` fills the ones it lacks. DM has no Masses: its mass is
    ``header["MassTable"][1]``. Raises DataFormatError naming the file and the field."""
    spec = normalise_fields(fields if fields is not None else PIPELINE_FIELDS)
    out: dict[str, Any] = {}
    with _open_hdf5(path, None) as f:
        attrs = f["Header"].attrs if isinstance(f.get("Header"), h5py.Group) else {}
        hdr: dict[str, Any] = {}
        for key in HEADER_KEYS:
            if key in attrs:
                value = attrs[key]
            elif header is not None and key in header and header[key] is not None:
                value = header[key]
            else:
                raise DataFormatError(path, f"Header/{key}", "attribute missing from the cutout "
                                      "and not supplied in `header`")
            if key == "MassTable":
                value = np.asarray(value, dtype=np.float64).reshape(-1)
                if value.shape != (6,):
                    raise DataFormatError(path, "Header/MassTable", f"shape {value.shape}, expected (6,)")
            else:
                try:
                    value = float(np.asarray(value).reshape(()))
                except (TypeError, ValueError):
                    raise DataFormatError(path, f"Header/{key}", f"not a number: {value!r}") from None
            hdr[key] = value
        out["header"] = hdr
        for ptype, names in spec.items():
            out[ptype] = _read_type(f, path, ptype, names, load=True)
    dm = out.get("dm")
    if dm and len(next(iter(dm.values()))) and not hdr["MassTable"][1] > 0:
        raise DataFormatError(path, "Header/MassTable", "DM particles present but MassTable[1] <= 0 "
                              "(PartType1 has no Masses)")
    return out


@contextlib.contextmanager
def _open_hdf5(path, display) -> Iterator[h5py.File]:
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as err:
        raise DataFormatError(display or path, None, f"not a readable HDF5 file ({err})") from None
    with f:
        yield f


def _read_type(f: h5py.File, path, ptype: str, names: Sequence[str], load: bool) -> dict:
    k = PART_TYPES[ptype]
    gname = f"PartType{k}"
    expected = None
    header = f.get("Header")
    if isinstance(header, h5py.Group) and "NumPart_ThisFile" in header.attrs:
        counts = np.asarray(header.attrs["NumPart_ThisFile"]).reshape(-1)
        expected = int(counts[k]) if counts.size > k else None
    group = f.get(gname)
    if not isinstance(group, h5py.Group) or len(group) == 0:
        if expected:
            raise DataFormatError(path, gname, f"group missing but Header/NumPart_ThisFile[{k}] = {expected}")
        return {n: np.zeros((0,) + FIELD_SHAPES.get(n, ()), dtype=np.float64) for n in names if n != "all"}
    out: dict[str, np.ndarray] = {}
    n_first = None
    for name in names:
        if name == "all":
            continue
        where = f"{gname}/{name}"
        ds = group.get(name)
        if not isinstance(ds, h5py.Dataset):
            raise DataFormatError(path, where, f"field missing (requested for {ptype})")
        shape = FIELD_SHAPES.get(name)
        if ds.ndim == 0 or (shape is not None and ds.shape[1:] != shape):
            want = "(N" + "".join(f", {s}" for s in (shape or ())) + ")"
            raise DataFormatError(path, where, f"shape {ds.shape}, expected {want}")
        n = ds.shape[0]
        if expected is not None and n != expected:
            raise DataFormatError(path, where, f"{n} particles, Header/NumPart_ThisFile[{k}] = {expected}")
        if n_first is not None and n != n_first[1]:
            raise DataFormatError(path, where, f"{n} particles, but {gname}/{n_first[0]} has {n_first[1]}")
        n_first = n_first or (name, n)
        if load:
            out[name] = ds[()]
    return out


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def _check_name(simulation: str) -> str:
    if not isinstance(simulation, str) or not _NAME_RE.match(simulation):
        raise Sim2obsValueError("simulation name must be letters, digits, '_', '-', '.'", value=simulation)
    return simulation


def _check_id(subhalo_id: int) -> int:
    if isinstance(subhalo_id, bool) or int(subhalo_id) != subhalo_id or subhalo_id < 0:
        raise Sim2obsValueError("subhalo id must be a non-negative integer", value=subhalo_id)
    return int(subhalo_id)


def _read_index(folder: Path) -> dict:
    try:
        index = json.loads((folder / "index.json").read_text())
        return index if isinstance(index, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        log.warning("unreadable cache index %s; treating it as empty", folder / "index.json")
        return {}
