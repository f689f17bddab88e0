"""The one download layer of sim2obs: every remote file (SDSS images, survey catalogues, TNG
web-API records and cutouts) goes through here.

- :class:`HttpClient`: a ``requests`` session per thread with urllib3 ``Retry`` (exponential
  back-off, ``Retry-After`` honoured) on transient answers (408, 425, 429, 5xx), timeouts and
  dropped connections; a 401/403/404 or an exhausted retry budget raises
  :class:`~sim2obs.errors.DownloadError` naming the URL.
- :func:`download_file`: streams a URL to ``<path>.part``, resumes an interrupted ``.part`` with
  an HTTP Range request (restarts when the server answers 200 or 416), retries a connection
  dropped mid-body, checks the size, the sha256 (when known) and the format (FITS opens with
  astropy, JPEG decodes, HDF5 opens, gzip/bz2 streams decompress, text is not an HTML error
  page), and only then renames the file into place. A file that fails a check is deleted, never
  cached. Per-file locks (``fcntl.flock``) let threads and processes share one cache.
- :class:`Downloader`: a cache folder of :class:`Remote` files (default
  ``$SIM2OBS_DATA/_downloads``) with an index of sizes, checksums, URLs and download dates, bounded
  parallel fetching with a tqdm bar, and a dry-run :meth:`Downloader.plan` that says what would
  be fetched and roughly how much (known sizes, else HEAD requests).

``SIM2OBS_OFFLINE=1`` refuses every request, naming where each missing file belongs.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from sim2obs.atomic import atomic_write
from sim2obs.errors import DataFormatError, DownloadError, Sim2obsValueError
from sim2obs.filecheck import KINDS, check_format, guess_kind  # noqa: F401 - re-exported
from sim2obs.provenance import file_sha256

try:  # POSIX advisory locks; without them (Windows) the cache is safe for one process only
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

log = logging.getLogger(__name__)

TRANSIENT_STATUS = (408, 425, 429, 500, 502, 503, 504)
CHUNK = 1 << 20
USER_AGENT = "sim2obs-download"
_OFFLINE_HINT = "unset SIM2OBS_OFFLINE to download it"
_NET_HINT = ("check the network (or a proxy) and run the command again, which resumes; or point the "
             "base URL setting at a mirror")


def default_cache_dir() -> Path:
    """``$SIM2OBS_DATA/_downloads`` (``SIM2OBS_DATA`` defaults to ``sim2obs_data``, as in
    ``configs/paths/default.yaml``)."""
    return Path(os.environ.get("SIM2OBS_DATA", "sim2obs_data")) / "_downloads"


def offline() -> bool:
    return os.environ.get("SIM2OBS_OFFLINE", "").strip().lower() in ("1", "true", "yes")


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------
class HttpClient:
    """HTTP GET/HEAD with retries, shared by every remote source.

    ``timeout``: seconds per socket operation. ``retries``: extra attempts after a transient
    failure, waiting ``backoff * 2**i`` s (at most ``max_backoff``; at least a server's
    ``Retry-After``). ``headers``: sent with every request (e.g. the TNG ``api-key``).
    """

    def __init__(self, timeout: float = 60.0, retries: int = 3, backoff: float = 1.0,
                 max_backoff: float = 60.0, headers: Mapping[str, str] | None = None):
        if retries < 0:
            raise Sim2obsValueError("retries must be >= 0", value=retries)
        self.timeout, self.retries = float(timeout), int(retries)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.headers = dict(headers or {})
        self._local = threading.local()

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        return min(self.backoff * 2 ** attempt, self.max_backoff)

    def _session(self) -> requests.Session:
        key = (self.retries, self.backoff, self.max_backoff)
        if getattr(self._local, "key", None) != key:
            retry = Retry(total=self.retries, connect=self.retries, read=self.retries, status=self.retries,
                          other=0, backoff_factor=self.backoff, backoff_max=self.max_backoff,
                          status_forcelist=TRANSIENT_STATUS, allowed_methods=frozenset({"GET", "HEAD"}),
                          raise_on_status=False, respect_retry_after_header=True)
            session = requests.Session()
            adapter = HTTPAdapter(max_retries=retry, pool_maxsize=16)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session, self._local.key = session, key
        return self._local.session

    def get(self, url: str, *, what: str | None = None, headers: Mapping[str, str] | None = None,
            stream: bool = False, cache_path: Any = None, method: str = "GET") -> requests.Response:
        """The response to ``method url`` (status < 400); otherwise :class:`DownloadError` naming
        the URL, ``what`` and ``cache_path``. Transient failures were retried first."""
        what = what or url
        if offline():
            raise DownloadError(url, f"{what}: offline (SIM2OBS_OFFLINE is set)", cache_path=cache_path,
                                hint=_OFFLINE_HINT)
        send = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **self.headers, **(headers or {})}
        attempts = self.retries + 1
        try:
            resp = self._session().request(method, url, headers=send, timeout=self.timeout, stream=stream,
                                           allow_redirects=True)
        except requests.exceptions.RequestException as err:
            timed_out = isinstance(err, requests.exceptions.Timeout) or "timed out" in str(err).lower()
            kind = f"timed out after {self.timeout:g} s" if timed_out else "could not connect"
            raise DownloadError(url, f"{what}: {kind} (gave up after {attempts} attempts; last error: "
                                f"{_short(err)})", cache_path=cache_path, hint=_NET_HINT) from None
        if resp.status_code < 400:
            return resp
        code = resp.status_code
        body = ""
        with contextlib.suppress(Exception):  # the body is only a hint
            body = resp.raw.read(300, decode_content=True).decode("utf-8", "replace").strip()
        resp.close()
        raise status_error(url, code, what, body, cache_path, attempts)


def status_error(url: str, code: int, what: str, body: str, cache_path: Any, attempts: int) -> DownloadError:
    """The :class:`DownloadError` of an HTTP error answer, with what to do about it."""
    if code in (401, 403):
        return DownloadError(url, f"{what}: access refused (HTTP {code})", code, cache_path,
                             "the server wants credentials or blocks this client: check any key or "
                             "login the source needs, or fetch the file in a browser")
    if code == 404:
        return DownloadError(url, f"{what}: not found (HTTP 404)", code, cache_path,
                             "check the base URL setting and the file name (release, version)")
    if code in TRANSIENT_STATUS or code >= 500:
        return DownloadError(url, f"{what}: gave up after {attempts} attempts; last error: HTTP {code}", code,
                             cache_path, "the server is busy or down: try again later (downloads resume)")
    return DownloadError(url, f"{what}: HTTP {code}: {body[:200]}", code, cache_path)


def _short(err: BaseException) -> str:
    text = str(err)
    return text if len(text) < 300 else text[:300] + "..."


# --------------------------------------------------------------------------------------------
# One file: stream, resume, verify, rename
# --------------------------------------------------------------------------------------------
class _Interrupted(Exception):
    """The body stopped before its end (dropped connection, read timeout, short body)."""


def download_file(client: HttpClient, url: str, path: str | os.PathLike, *, what: str | None = None,
                  validate: Callable[[Path, str], None] | None = None, kind: str = "auto",
                  sha256: str | None = None, size: int | None = None,
                  headers: Mapping[str, str] | None = None, progress: bool = False, lock: bool = True) -> Path:
    """Download ``url`` to ``path`` (atomically) and return ``path``.

    The bytes go to ``<path>.part``; an existing ``.part`` is resumed with a Range request.
    When the body is complete it must match ``size`` and ``sha256`` (when given) and pass
    ``validate(part, display)`` (default: :func:`check_format` of ``kind``), else it is deleted
    and an error raised (a resumed file that fails is downloaded once more from the start).
    ``progress``: a tqdm bar of bytes. ``lock``: take the file's :func:`file_lock` (pass False
    when the caller already holds it).
    """
    path = Path(path)
    what = what or path.name
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    display = f"{path} (downloaded from {url})"
    check = validate or (lambda p, d: check_format(p, kind, d))
    with (file_lock(path) if lock else contextlib.nullcontext()):
        state = {"resumed": False}
        for fresh in (False, True):
            if fresh:
                part.unlink(missing_ok=True)
                state["resumed"] = False
            _transfer_with_retries(client, url, part, path, what, headers, progress, state)
            try:
                _verify(part, url, path, what, size, sha256)
                check(part, display)
                break
            except (DataFormatError, DownloadError):
                part.unlink(missing_ok=True)
                if not state["resumed"] or fresh:
                    raise
                log.warning("%s: the resumed download is invalid; downloading it again from the start", what)
        os.replace(part, path)
    return path


def _verify(part: Path, url: str, path: Path, what: str, size: int | None, sha256: str | None) -> None:
    got = part.stat().st_size
    if size is not None and got != int(size):
        raise DownloadError(url, f"{what}: {got} bytes received, {size} expected; truncated file not cached",
                            cache_path=path, hint="run again to download it afresh")
    if sha256 and file_sha256(part) != sha256.lower():
        raise DownloadError(url, f"{what}: sha256 differs from the known checksum {sha256}; corrupt file not "
                            "cached", cache_path=path, hint="run again; if it persists the mirror serves "
                            "another version of the file")


def _transfer_with_retries(client: HttpClient, url: str, part: Path, path: Path, what: str,
                           headers: Mapping[str, str] | None, progress: bool, state: dict) -> None:
    last: Exception | None = None
    for i in range(client.retries + 1):
        try:
            return _transfer(client, url, part, path, what, headers, progress, state)
        except _Interrupted as err:
            last = err
            if i < client.retries:
                log.warning("%s: %s; resuming (%d/%d) in %.3g s", what, err, i + 1, client.retries, client.delay(i))
                time.sleep(client.delay(i))
    raise DownloadError(url, f"{what}: gave up after {client.retries + 1} interrupted attempts; last error: "
                        f"{last}", cache_path=path, hint=f"the partial file {part} is kept: run again to resume")


def _transfer(client: HttpClient, url: str, part: Path, path: Path, what: str,
              headers: Mapping[str, str] | None, progress: bool, state: dict) -> None:
    offset = part.stat().st_size if part.exists() else 0
    send = dict(headers or {})
    if offset:
        send["Range"] = f"bytes={offset}-"
    try:
        resp = client.get(url, what=what, headers=send, stream=True, cache_path=path)
    except DownloadError as err:
        if err.status == 416 and offset:  # our .part is not a prefix the server can continue
            part.unlink()
            return _transfer(client, url, part, path, what, headers, progress, state)
        raise
    with resp:
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if offset and resp.status_code == 206:
            start, total = content_range(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _Interrupted(f"server resumed at byte {start}, not {offset}; restarting")
            if total is None and length is not None:
                total = offset + length
            mode, state["resumed"] = "ab", True
            log.info("%s: resuming at byte %d", what, offset)
        else:  # 200: the whole body (no Range sent, or the server ignored it)
            if offset:
                log.info("%s: the server ignored the Range request; restarting", what)
            offset, total, mode = 0, length, "wb"
        encoded = resp.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
        if encoded:  # a server that compressed despite "Accept-Encoding: identity": store the file itself
            offset, total, mode = 0, None, "wb"
        bar = progress_bar(progress, total, offset, what)
        try:
            with open(part, mode) as f:
                for chunk in resp.raw.stream(CHUNK, decode_content=encoded):
                    f.write(chunk)
                    bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
            raise _Interrupted(f"{type(err).__name__}: {_short(err)}") from None
        finally:
            bar.close()
    got = part.stat().st_size
    if total is not None and got != total:
        raise _Interrupted(f"connection closed after {got} of {total} bytes")


def content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes START-END/TOTAL`` -> (START, TOTAL or None for ``*``)."""
    m = re.match(r"^\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*$", value or "")
    if not m:
        return None, None
    return int(m.group(1)), (None if m.group(2) == "*" else int(m.group(2)))


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock for ``path`` (a hidden ``.<name>.lock`` beside it), between
    processes and threads."""
    lock_path = path.with_name(f".{path.name}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(enabled: bool, total: int | None, initial: int, desc: str, unit: str = "B"):
    """A tqdm bar (bytes by default), or a do-nothing one."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit=unit, unit_scale=unit == "B", desc=desc[:60], leave=False)


# --------------------------------------------------------------------------------------------
# The cache of named remote files
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Remote:
    """A remote file: ``url``; ``name``, its path inside the cache folder; ``sha256`` and ``size``
    (bytes) when known; ``kind``, the format check (``auto``: from the name)."""

    url: str
    name: str
    sha256: str | None = None
    size: int | None = None
    kind: str = "auto"
    description: str = ""

    def __post_init__(self):
        if not self.name or Path(self.name).is_absolute() or ".." in Path(self.name).parts:
            raise Sim2obsValueError("a cached file's name must be a relative path inside the cache", value=self.name)


class Downloader:
    """Fetches :class:`Remote` files into ``cache_dir`` (default :func:`default_cache_dir`).

    A file is taken from the cache when present and, where known, its size and sha256 match
    (else the index's record of it does); ``refresh=True`` downloads again. ``max_workers``
    bounds parallel downloads in :meth:`fetch_all`. ``progress``: tqdm bars.
    """

    INDEX = "_index.json"

    def __init__(self, cache_dir: str | os.PathLike | None = None, *, client: HttpClient | None = None,
                 timeout: float = 60.0, retries: int = 3, backoff: float = 1.0, max_workers: int = 4,
                 progress: bool = True):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.client = client or HttpClient(timeout=timeout, retries=retries, backoff=backoff)
        if max_workers < 1:
            raise Sim2obsValueError("max_workers must be >= 1", value=max_workers)
        self.max_workers, self.progress = int(max_workers), bool(progress)

    def path(self, remote: Remote) -> Path:
        return self.cache_dir / remote.name

    # -- cache ----------------------------------------------------------------------------
    def cached(self, remote: Remote) -> bool:
        """Whether a usable copy of ``remote`` is in the cache (placed by hand counts when it
        passes the format check and any known size/checksum)."""
        path = self.path(remote)
        if not path.is_file():
            return False
        if remote.size is not None and path.stat().st_size != remote.size:
            return False
        if remote.sha256:
            return file_sha256(path) == remote.sha256.lower()
        entry = self._index().get(remote.name)
        if entry is not None and entry.get("size") == path.stat().st_size:
            return True
        try:  # no record (placed by hand, or killed before the index write): adopt if valid
            check_format(path, remote.kind)
        except DataFormatError as err:
            log.warning("cached %s is not valid (%s); downloading it again", path, err)
            return False
        self._record(remote, path, source="found in cache")
        return True

    def _index(self) -> dict:
        try:
            index = json.loads((self.cache_dir / self.INDEX).read_text())
            return index if isinstance(index, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            log.warning("unreadable download index %s; treating it as empty", self.cache_dir / self.INDEX)
            return {}

    def _record(self, remote: Remote, path: Path, source: str = "downloaded") -> dict:
        entry = {"url": remote.url, "size": path.stat().st_size, "sha256": file_sha256(path), "source": source,
                 "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        index_path = self.cache_dir / self.INDEX
        with file_lock(index_path):
            index = self._index()
            index[remote.name] = entry
            atomic_write(index_path, lambda f: json.dump(index, f, indent=1, sort_keys=True), mode="w")
        return entry

    def record(self, remote: Remote) -> dict | None:
        """The index entry of a cached file: url, size, sha256, date (UTC) and source."""
        return self._index().get(remote.name)

    # -- fetching -------------------------------------------------------------------------
    def fetch(self, remote: Remote, *, refresh: bool = False, progress: bool | None = None) -> Path:
        """The cached path of ``remote``, downloaded first unless usable there."""
        path = self.path(remote)
        if not refresh and self.cached(remote):
            return path
        download_file(self.client, remote.url, path, what=remote.description or remote.name, kind=remote.kind,
                      sha256=remote.sha256, size=remote.size,
                      progress=self.progress if progress is None else progress)
        self._record(remote, path)
        return path

    def fetch_all(self, remotes: Sequence[Remote], *, refresh: bool = False, desc: str = "download") -> list[Path]:
        """:meth:`fetch` each of ``remotes`` with at most ``max_workers`` at once (one bar counting
        files); returns their paths in order. The first error is raised after the others finish."""
        remotes = list(remotes)
        if not remotes:
            return []
        byte_bars = len(remotes) <= 8  # a few (large) files: a bytes bar each; many: one bar of files
        bar = progress_bar(self.progress and not byte_bars, len(remotes), 0, desc, unit="file")

        def job(r: Remote) -> Path:
            try:
                return self.fetch(r, refresh=refresh, progress=self.progress and byte_bars)
            finally:
                bar.update(1)

        try:
            with ThreadPoolExecutor(max_workers=min(self.max_workers, len(remotes))) as pool:
                futures = [pool.submit(job, r) for r in remotes]
                errors = [f.exception() for f in futures]
        finally:
            bar.close()
        for err in errors:
            if err is not None:
                raise err
        return [f.result() for f in futures]

    # -- dry run --------------------------------------------------------------------------
    def plan(self, remotes: Sequence[Remote], *, head: bool = True) -> list[dict[str, Any]]:
        """What :meth:`fetch_all` would do, without downloading: per file its url, cache path,
        ``cached`` and ``size`` (bytes; from the cache, the known size, or a HEAD request when
        ``head``; None if unknown) and where the size came from."""
        out = []
        for r in remotes:
            path = self.path(r)
            row = {"name": r.name, "url": r.url, "path": str(path), "cached": False, "size": r.size,
                   "size_from": "known" if r.size is not None else None}
            if path.is_file() and self.cached(r):
                row.update(cached=True, size=path.stat().st_size, size_from="cache")
            elif row["size"] is None and head and not offline():
                row["size"] = self._head_size(r)
                row["size_from"] = "HEAD" if row["size"] is not None else "HEAD gave no size"
            out.append(row)
        return out

    def _head_size(self, remote: Remote) -> int | None:
        try:
            resp = self.client.get(remote.url, what=remote.name, method="HEAD", cache_path=self.path(remote))
        except DownloadError as err:
            log.warning("HEAD %s failed: %s", remote.url, err)
            return None
        with resp:
            length = resp.headers.get("Content-Length")
        return int(length) if length and length.isdigit() else None


def describe_plan(rows: Sequence[Mapping[str, Any]], *, max_lines: int = 20, extra: int = 0,
                  extra_bytes_each: float | None = None, extra_what: str = "") -> str:
    """Human-readable dry-run summary of :meth:`Downloader.plan` rows: the files to fetch (up to
    ``max_lines``), how many are cached, and the total size (rough where sizes are unknown).
    ``extra``: more files of one kind not listed one by one (e.g. image cutouts), at about
    ``extra_bytes_each`` bytes each."""
    todo = [r for r in rows if not r["cached"]]
    known = sum(r["size"] for r in todo if r["size"] is not None)
    unknown = sum(r["size"] is None for r in todo)
    lines = [f"{len(todo)} file(s) to fetch, {len(rows) - len(todo)} already cached"]
    for r in todo[:max_lines]:
        size = human_bytes(r["size"]) if r["size"] is not None else "size unknown"
        how = f", {r['size_from']}" if r["size_from"] else ""
        url = r["url"] if len(r["url"]) <= 150 else f"{r['url'][:120]}... ({len(r['url'])} characters)"
        lines.append(f"  {url}\n    -> {r['path']} ({size}{how})")
    if len(todo) > max_lines:
        lines.append(f"  ... and {len(todo) - max_lines} more")
    total = known
    if extra:
        each = f" at about {human_bytes(extra_bytes_each)} each" if extra_bytes_each else ""
        lines.append(f"  + up to {extra} {extra_what or 'more files'}{each}")
        total += extra * (extra_bytes_each or 0)
    tail = f" (+ {unknown} file(s) of unknown size)" if unknown else ""
    lines.append(f"total to download: about {human_bytes(total)}{tail}")
    return "\n".join(lines)


def human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"


def url_join(base: str, *parts: str) -> str:
    """``base`` and path ``parts`` joined with single slashes (base URLs are configurable)."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def sha256_of_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
