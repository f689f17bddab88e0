"""A static file server on 127.0.0.1 for the survey tests (no network): serves bytes by path,
answers Range requests with 206, and injects failures on request (statuses, a slow answer,
a body cut off halfway, Range ignored)."""
from __future__ import annotations

import contextlib
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Iterator
from urllib.parse import urlsplit

import pytest

from tests.loopback_http import serve_on_loopback


class FileServer:
    """State of the server: ``files`` {URL path (with query, as sent): bytes}, the request log
    and the failure knobs. ``base`` is its URL."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.statuses: dict[str, list[int]] = {}   # path -> statuses answered (popped) first
        self.truncate: dict[str, int] = {}        # path -> answers to cut off halfway
        self.sleep: dict[str, float] = {}          # path -> seconds to wait before the next answer
        self.ignore_range = False
        self.headers: dict[str, dict[str, str]] = {}  # path -> extra headers of its 200 answers
        self.base = ""
        self.lock = threading.Lock()

    def add(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path``; returns its full URL."""
        self.files[path if path.startswith("/") else "/" + path] = data
        return self.url(path)

    def url(self, path: str) -> str:
        return self.base + (path if path.startswith("/") else "/" + path)

    def count(self, what: str = "", method: str | None = None) -> int:
        return sum(what in r["path"] and (method is None or r["method"] == method) for r in self.requests)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _head(self, status: int, length: int, headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool):  # noqa: C901 - a small router
        srv: FileServer = self.server.state
        path = self.path
        key = urlsplit(path).path
        rng = self.headers.get("Range")
        with srv.lock:
            srv.requests.append({"path": path, "method": self.command, "range": rng})
            delay = srv.sleep.pop(key, 0.0)
            status = srv.statuses.get(key, []).pop(0) if srv.statuses.get(key) else None
            truncate = srv.truncate.get(key, 0) > 0 and body
            if truncate:
                srv.truncate[key] -= 1
        if delay:
            time.sleep(delay)
        if status is not None:
            msg = f"error {status}".encode()
            self._head(status, len(msg))
            if body:
                self.wfile.write(msg)
            return
        data = srv.files.get(path, srv.files.get(key))
        if data is None:
            msg = b"not found"
            self._head(404, len(msg))
            if body:
                self.wfile.write(msg)
            return
        if truncate:  # promise everything, send half, drop the connection
            self._head(200, len(data))
            self.wfile.write(data[:len(data) // 2])
            self.close_connection = True
            return
        if rng and not srv.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self._head(416, 0, {"Content-Range": f"bytes */{len(data)}"})
                return
            self._head(206, len(data) - start, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
            if body:
                self.wfile.write(data[start:])
            return
        self._head(200, len(data), srv.headers.get(key))
        if body:
            self.wfile.write(data)


@contextlib.contextmanager
def serve_files() -> Iterator[FileServer]:
    with serve_on_loopback(_Handler, FileServer()) as state:
        yield state


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    with serve_files() as state:
        yield state
