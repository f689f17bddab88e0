"""One local HTTP server for the tests that fake a remote service (the TNG web API, survey file
hosts): it listens on a free port of 127.0.0.1 only, in a daemon thread, and never reaches the
network."""
from __future__ import annotations

import contextlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that gave up (timeout tests): fine
        pass


@contextlib.contextmanager
def serve_on_loopback(handler: type[BaseHTTPRequestHandler], state: Any) -> Iterator[Any]:
    """Serve ``handler`` (which reads ``self.server.state``) until the block ends; ``state.base``
    is set to the server's URL."""
    server = QuietServer(("127.0.0.1", 0), handler)
    server.state = state
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
