"""A fake TNG web API on 127.0.0.1 (records, paginated search, cutouts with Range support,
failure knobs) for the API client and pipeline tests: no network."""
from __future__ import annotations

import contextlib
import json
import re
import time
from http.server import BaseHTTPRequestHandler
from typing import Iterator
from urllib.parse import parse_qsl, urlsplit

from tests.loopback_http import serve_on_loopback

SIM, SNAP, KEY = "TNG-Test", 99, "secret-key"
HEADER = {"HubbleParam": 0.6774, "Redshift": 0.0, "Time": 1.0, "Omega0": 0.3089, "OmegaLambda": 0.6911,
          "OmegaBaryon": 0.0486, "BoxSize": 75000.0, "MassTable": [0, 5.06e-4, 0, 0, 0, 0]}


# --------------------------------------------------------------------------------------------
# Fake TNG server
# --------------------------------------------------------------------------------------------
class FakeTNG:
    """State of the fake API: records, cutout bytes, request log and failure knobs."""

    def __init__(self, cutouts: dict[int, bytes], records: dict[int, dict] | None = None,
                 simulation: dict | None = None, redshift: float = 0.5):
        self.cutouts = cutouts
        self.records = dict(records or {})  # subhalo id -> full API record (default: a made-up one)
        self.masses = ({i: float(r.get("mass_stars", 1.0)) for i, r in self.records.items()} if records
                       else {i: float(i) for i in range(1, 8)})  # subhalo id -> mass_stars
        self.simulation = simulation or {"name": SIM, "hubble": 0.6774, "omega_0": 0.3089, "omega_L": 0.6911,
                                         "omega_B": 0.0486, "boxsize": 75000.0, "mass_dm": 5.06e-4}
        self.redshift = redshift
        self.requests: list[dict] = []
        self.fail_statuses: list[int] = []   # statuses answered (and popped) before normal service
        self.ignore_range = False
        self.truncate_next = 0               # cutout answers cut off halfway
        self.sleep_next = 0.0                # seconds the next answer waits before replying
        self.base = ""

    def count(self, what: str = "") -> int:
        return sum(what in r["path"] for r in self.requests)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status, body: bytes, ctype="application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj, status=200):
        self._send(status, json.dumps(obj).encode())

    def do_GET(self):  # noqa: C901 - a small router
        fake: FakeTNG = self.server.state
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query))
        fake.requests.append({"path": parts.path, "query": query, "range": self.headers.get("Range"),
                              "key": self.headers.get("api-key")})
        if fake.sleep_next:
            delay, fake.sleep_next = fake.sleep_next, 0.0
            time.sleep(delay)
        if self.headers.get("api-key") != KEY:
            return self._json({"detail": "Invalid API key."}, 403)
        if fake.fail_statuses:
            return self._json({"detail": "server error"}, fake.fail_statuses.pop(0))
        base = f"/api/{SIM}"
        if parts.path == f"{base}/":
            return self._json(fake.simulation)
        if parts.path == f"{base}/snapshots/{SNAP}/":
            return self._json({"number": SNAP, "redshift": fake.redshift})
        if parts.path == f"{base}/snapshots/{SNAP}/subhalos/":
            cut = float(query.get("mass_stars__gt", "-inf"))
            ids = [i for i, m in sorted(fake.masses.items()) if m > cut]
            limit, offset = int(query.get("limit", 100)), int(query.get("offset", 0))
            nxt = None
            if offset + limit < len(ids):
                q = "&".join(f"{k}={v}" for k, v in {**query, "offset": offset + limit}.items())
                nxt = f"{fake.base}{parts.path}?{q}"
            return self._json({"count": len(ids), "next": nxt, "previous": None,
                               "results": [{"id": i, "mass_stars": fake.masses[i]} for i in ids[offset:offset + limit]]})
        m = re.fullmatch(rf"{base}/snapshots/{SNAP}/subhalos/(\d+)/", parts.path)
        if m:
            sid = int(m.group(1))
            if sid not in fake.masses:
                return self._json({"detail": "Not found."}, 404)
            return self._json(fake.records.get(sid) or {"id": sid, "pos_x": 1.0, "pos_y": 2.0, "pos_z": 3.0,
                                                        "mass_stars": fake.masses[sid], "halfmassrad_stars": 4.0})
        m = re.fullmatch(rf"{base}/snapshots/{SNAP}/subhalos/(\d+)/cutout.hdf5", parts.path)
        if m:
            data = fake.cutouts.get(int(m.group(1)))
            if data is None:
                return self._json({"detail": "Not found."}, 404)
            rng = self.headers.get("Range")
            if fake.truncate_next:  # promise everything, send half, drop the connection
                fake.truncate_next -= 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-hdf5")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[:len(data) // 2])
                self.close_connection = True
                return
            if rng and not fake.ignore_range:
                start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                if start >= len(data):
                    return self._send(416, b"", headers={"Content-Range": f"bytes */{len(data)}"})
                return self._send(206, data[start:], "application/x-hdf5",
                                  {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
            return self._send(200, data, "application/x-hdf5")
        return self._json({"detail": "Not found."}, 404)


@contextlib.contextmanager
def serve(state: FakeTNG) -> Iterator[FakeTNG]:
    """Serve ``state`` on a free port of 127.0.0.1 (``state.base`` is its URL) until the block ends."""
    with serve_on_loopback(Handler, state) as served:
        yield served
