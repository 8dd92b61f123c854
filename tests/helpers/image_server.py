"""A local HTTP server (127.0.0.1 only) that serves images and misbehaves on purpose, for URL tests
and load runs. Nothing here ever talks to another host."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send(
        self, status: int, body: bytes = b"", content_type: str = "image/jpeg", headers: dict | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, chunk: bytes, count: int, headers: dict, pause_s: float = 0.0) -> None:
        """Send `count` chunks as an image response, until the client hangs up."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        try:
            for _ in range(count):
                self.wfile.write(chunk)
                if pause_s:
                    self.wfile.flush()
                    time.sleep(pause_s)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        path = self.path.split("?")[0]
        if path.startswith("/images/"):
            image = SAMPLE / "images" / Path(path).name
            return self._send(200, image.read_bytes()) if image.is_file() else self._send(404, b"", "text/plain")
        if path == "/redirect":
            return self._send(302, headers={"Location": "/images/10138.jpg"})
        if path == "/redirect-chain":
            hops = int(self.path.split("hops=")[1]) if "hops=" in self.path else 5
            target = f"/redirect-chain?hops={hops - 1}" if hops > 0 else "/images/10138.jpg"
            return self._send(302, headers={"Location": target})
        if path == "/redirect-private":
            return self._send(302, headers={"Location": f"http://127.0.0.2:{port}/images/10138.jpg"})
        if path == "/text":
            return self._send(200, b"hello, I am text", "text/plain")
        if path == "/huge":  # 50 MB, announced
            return self._stream(b"\0" * 65536, 50 * 16, {"Content-Length": str(50 * 1024 * 1024)})
        if path == "/huge-chunked":  # 50 MB, not announced: only streaming with a cap stops it
            self.close_connection = True
            return self._stream(b"\xff" * 65536, 50 * 16, {"Connection": "close"})
        if path == "/slow":  # drips one byte a second
            return self._stream(b"\xff", 60, {"Content-Length": "100000"}, pause_s=1.0)
        if path == "/drip-headers":  # a status line, then a header a byte at a time: no read ever times out
            self.close_connection = True
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                for _ in range(300):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return None
        return self._send(404, b"not found", "text/plain")


class ImageServer:
    """`with ImageServer() as server: server.url("/images/10138.jpg")`"""

    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> "ImageServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
