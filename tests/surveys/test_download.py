"""The download layer against a local file server (no network): resume, refusal to cache bad
files, clear errors, parallel fetching and the dry run."""
from __future__ import annotations

import gzip
import hashlib
import io
import json

import h5py
import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from sim2obs.download import (Downloader, HttpClient, Remote, check_format, describe_plan, download_file)
from sim2obs.errors import DataFormatError, DownloadError


def fits_bytes(shape=(64, 64), seed=0) -> bytes:
    data = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(data), fits.BinTableHDU.from_columns(
        [fits.Column(name="x", format="E", array=np.arange(10, dtype=np.float32))])]).writeto(buf)
    return buf.getvalue()


def jpeg_bytes(size=32, seed=0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def hdf5_bytes(tmp_path) -> bytes:
    p = tmp_path / "x.h5"
    with h5py.File(p, "w") as f:
        f["a"] = np.arange(1000.0)
    return p.read_bytes()


@pytest.fixture
def dl(tmp_path):
    return Downloader(tmp_path / "cache", timeout=5, retries=2, backoff=0.001, max_workers=3, progress=False)


def test_fetch_verifies_caches_and_records(dl, file_server):
    data = fits_bytes()
    url = file_server.add("/cat/table.fits", data)
    r = Remote(url, "cat/table.fits", sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    path = dl.fetch(r)
    assert path == dl.cache_dir / "cat/table.fits" and path.read_bytes() == data
    assert not path.with_name("table.fits.part").exists()
    rec = dl.record(r)
    assert rec["url"] == url and rec["size"] == len(data) and rec["sha256"] == hashlib.sha256(data).hexdigest()
    assert rec["date"].startswith("20")
    assert dl.fetch(r) == path and file_server.count() == 1  # from the cache


def test_interrupted_part_file_resumes_with_range(dl, file_server):
    data = fits_bytes((128, 128))
    url = file_server.add("/f/frame.fits", data)
    r = Remote(url, "f/frame.fits")
    part = dl.path(r).with_name("frame.fits.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:5000])
    assert dl.fetch(r).read_bytes() == data
    assert [q["range"] for q in file_server.requests] == ["bytes=5000-"]
    assert not part.exists()


def test_dropped_connection_resumes_where_it_stopped(dl, file_server):
    data = fits_bytes((128, 128))
    url = file_server.add("/f/frame.fits", data)
    file_server.truncate["/f/frame.fits"] = 1
    assert dl.fetch(Remote(url, "frame.fits")).read_bytes() == data
    assert [q["range"] for q in file_server.requests] == [None, f"bytes={len(data) // 2}-"]


def test_server_ignoring_range_restarts_from_zero(dl, file_server):
    data = fits_bytes()
    url = file_server.add("/a.fits", data)
    file_server.ignore_range = True
    r = Remote(url, "a.fits")
    dl.path(r).parent.mkdir(parents=True, exist_ok=True)
    dl.path(r).with_name("a.fits.part").write_bytes(data[:100])
    assert dl.fetch(r).read_bytes() == data


@pytest.mark.parametrize("name,make,cut", [
    ("t.fits", lambda tmp: fits_bytes((128, 128)), 0.5),
    ("t.jpg", lambda tmp: jpeg_bytes(64), 0.6),
    ("t.h5", hdf5_bytes, 0.5),
    ("t.csv.gz", lambda tmp: gzip.compress(b"a,b\n" + b"1,2\n" * 5000), 0.5),
])
def test_truncated_file_is_refused_and_not_cached(dl, file_server, tmp_path, name, make, cut):
    data = make(tmp_path)
    url = file_server.add(f"/{name}", data[:int(len(data) * cut)])  # the server itself has a short file
    r = Remote(url, name)
    with pytest.raises(DataFormatError) as err:
        dl.fetch(r)
    assert url in str(err.value) and "not a whole" in str(err.value)
    assert not dl.path(r).exists() and not dl.path(r).with_name(name + ".part").exists()
    assert dl.record(r) is None


def test_html_error_page_is_not_a_csv(dl, file_server):
    url = file_server.add("/gz2.csv", b"<!DOCTYPE html><html><body>Service unavailable</body></html>")
    with pytest.raises(DataFormatError, match="HTML page"):
        dl.fetch(Remote(url, "gz2.csv"))


def test_checksum_and_size_mismatch_are_refused(dl, file_server):
    data = fits_bytes()
    url = file_server.add("/x.fits", data)
    bad = Remote(url, "x.fits", sha256="0" * 64)
    with pytest.raises(DownloadError, match="sha256 differs") as err:
        dl.fetch(bad)
    assert err.value.cache_path == str(dl.path(bad)) and not dl.path(bad).exists()
    with pytest.raises(DownloadError, match=f"{len(data)} bytes received, {len(data) + 1} expected"):
        dl.fetch(Remote(url, "x.fits", size=len(data) + 1))
    assert not dl.path(bad).exists()


def test_corrupt_resumed_file_is_downloaded_again_from_scratch(dl, file_server):
    data = fits_bytes((128, 128))
    url = file_server.add("/c.fits", data)
    r = Remote(url, "c.fits")
    dl.path(r).parent.mkdir(parents=True, exist_ok=True)
    dl.path(r).with_name("c.fits.part").write_bytes(b"\0" * 3000)  # not the file's first bytes
    assert dl.fetch(r).read_bytes() == data
    assert [q["range"] for q in file_server.requests] == ["bytes=3000-", None]


@pytest.mark.parametrize("status,words", [(404, "not found (HTTP 404)"), (403, "access refused (HTTP 403)")])
def test_404_and_403_name_url_cache_path_and_what_to_do(dl, file_server, status, words):
    file_server.add("/gone.fits", fits_bytes())
    file_server.statuses["/gone.fits"] = [status] * 5
    r = Remote(file_server.url("/gone.fits"), "sdss/gone.fits")
    with pytest.raises(DownloadError) as err:
        dl.fetch(r)
    text = str(err.value)
    assert words in text and r.url in text and str(dl.path(r)) in text and "placed by hand" in text
    assert err.value.status == status and err.value.hint
    assert file_server.count() == 1  # not retried
    assert not dl.path(r).exists()


def test_timeout_gives_a_clear_error_then_retry_succeeds(tmp_path, file_server):
    data = fits_bytes()
    url = file_server.add("/slow.fits", data)
    quick = Downloader(tmp_path / "c", timeout=0.2, retries=0, backoff=0.001, progress=False)
    file_server.sleep["/slow.fits"] = 1.0
    r = Remote(url, "slow.fits")
    with pytest.raises(DownloadError, match="timed out after 0.2 s") as err:
        quick.fetch(r)
    assert url in str(err.value) and str(quick.path(r)) in str(err.value) and err.value.status is None
    patient = Downloader(tmp_path / "c", timeout=0.2, retries=2, backoff=0.001, progress=False)
    file_server.sleep["/slow.fits"] = 1.0
    assert patient.fetch(r).read_bytes() == data


def test_transient_status_is_retried_then_gives_up(dl, file_server):
    data = fits_bytes()
    url = file_server.add("/busy.fits", data)
    file_server.statuses["/busy.fits"] = [503, 500]
    assert dl.fetch(Remote(url, "busy.fits")).read_bytes() == data
    assert file_server.count("/busy.fits") == 3
    file_server.statuses["/busy.fits"] = [500] * 5
    with pytest.raises(DownloadError, match="gave up after 3 attempts; last error: HTTP 500"):
        dl.fetch(Remote(url, "busy2.fits"))


def test_offline_names_the_cache_path_without_a_request(dl, file_server, monkeypatch):
    monkeypatch.setenv("SIM2OBS_OFFLINE", "1")
    r = Remote(file_server.url("/x.fits"), "x.fits")
    with pytest.raises(DownloadError, match="offline") as err:
        dl.fetch(r)
    assert str(dl.path(r)) in str(err.value) and file_server.count() == 0


def test_file_placed_by_hand_is_adopted_if_valid(dl, file_server):
    data = fits_bytes()
    r = Remote(file_server.url("/hand.fits"), "hand.fits")
    dl.path(r).parent.mkdir(parents=True, exist_ok=True)
    dl.path(r).write_bytes(data)
    assert dl.fetch(r).read_bytes() == data and file_server.count() == 0
    assert dl.record(r)["source"] == "found in cache"
    dl.path(r).write_bytes(data[:len(data) // 2])  # broken by hand: the index size no longer matches
    file_server.add("/hand.fits", data)
    assert dl.fetch(r).read_bytes() == data and file_server.count() == 1


def test_fetch_all_parallel_keeps_order(dl, file_server):
    blobs = {f"/p/{i}.jpg": jpeg_bytes(16, seed=i) for i in range(7)}
    remotes = [Remote(file_server.add(k, v), k.lstrip("/")) for k, v in blobs.items()]
    for k in list(blobs)[:3]:
        file_server.sleep[k] = 0.2
    paths = dl.fetch_all(remotes)
    assert [p.read_bytes() for p in paths] == list(blobs.values())
    assert file_server.count("/p/") == 7


def test_fetch_all_raises_the_error_after_the_rest(dl, file_server):
    good = Remote(file_server.add("/g.jpg", jpeg_bytes()), "g.jpg")
    bad = Remote(file_server.url("/missing.jpg"), "missing.jpg")
    with pytest.raises(DownloadError, match="HTTP 404"):
        dl.fetch_all([bad, good])
    assert dl.path(good).exists()


def test_dry_run_plan_sizes_from_cache_known_and_head(dl, file_server):
    a, b, c = fits_bytes(seed=1), fits_bytes((100, 100), seed=2), jpeg_bytes()
    ra = Remote(file_server.add("/a.fits", a), "a.fits")
    rb = Remote(file_server.add("/b.fits", b), "b.fits")
    rc = Remote(file_server.add("/c.jpg", c), "c.jpg", size=len(c))
    dl.fetch(ra)
    before = len(file_server.requests)
    rows = dl.plan([ra, rb, rc])
    assert [r["cached"] for r in rows] == [True, False, False]
    assert [r["size"] for r in rows] == [len(a), len(b), len(c)]
    assert [r["size_from"] for r in rows] == ["cache", "HEAD", "known"]
    assert file_server.count("/b.fits", method="HEAD") == 1 and file_server.count(method="GET") == before
    assert not dl.path(rb).exists()
    text = describe_plan(rows, extra=10, extra_bytes_each=5000, extra_what="JPEG cutouts")
    assert "2 file(s) to fetch, 1 already cached" in text and rb.url in text and str(dl.path(rb)) in text
    assert "+ up to 10 JPEG cutouts at about 5.0 KB each" in text
    total = (len(b) + len(c) + 50000) / 1000
    assert f"total to download: about {total:.1f} KB" in text


def test_download_file_with_custom_validator(tmp_path, file_server):
    url = file_server.add("/j.json", json.dumps({"ok": 1}).encode())
    seen = []
    client = HttpClient(timeout=5, retries=0)
    out = download_file(client, url, tmp_path / "j.json", validate=lambda p, d: seen.append(d))
    assert json.loads(out.read_text()) == {"ok": 1} and url in seen[0]


def test_check_format_kinds(tmp_path):
    p = tmp_path / "a.fits"
    p.write_bytes(fits_bytes())
    check_format(p)
    q = tmp_path / "a.jpg"
    q.write_bytes(fits_bytes())
    with pytest.raises(DataFormatError, match="JPEG"):
        check_format(q)
    check_format(q, kind="fits")


def test_content_encoded_answer_is_stored_decoded(dl, file_server):
    """A server that gzips the body despite ``Accept-Encoding: identity`` still gives the file."""
    text = b"a,b\n" + b"1,2\n" * 1000
    url = file_server.add("/t.csv", gzip.compress(text))
    file_server.headers["/t.csv"] = {"Content-Encoding": "gzip"}
    assert dl.fetch(Remote(url, "t.csv")).read_bytes() == text
