"""Vigil's HTML reports (Evidently drift reports, model cards' plots) over HTTP on 127.0.0.1, so
the Dagster UI's links open in one click (a browser will not follow a ``file://`` link from a web
page). Read-only, whitelisted suffixes, no directory listing, paths confined to the folder."""

from __future__ import annotations

import http.server
import threading
from functools import partial
from pathlib import Path
from urllib.parse import unquote, urlsplit

SUFFIXES = {".html": "text/html; charset=utf-8", ".png": "image/png", ".csv": "text/csv; charset=utf-8",
            ".md": "text/markdown; charset=utf-8", ".json": "application/json"}
MAX_BYTES = 200 * 1024 * 1024  # an Evidently report of a big day is tens of MB; nothing here is larger
DEFAULT_URL = "http://127.0.0.1:3002"


def report_url(base: str, root: Path, file: Path) -> str:
    """The URL of ``file`` (under ``root``) on the report server at ``base``."""
    return f"{base.rstrip('/')}/{Path(file).resolve().relative_to(Path(root).resolve()).as_posix()}"


class _Handler(http.server.BaseHTTPRequestHandler):
    root: Path

    def __init__(self, *args, root: Path, **kwargs):
        self.root = root
        super().__init__(*args, **kwargs)

    def log_message(self, fmt, *args):  # no per-request log lines: a scraper must not grow the log
        pass

    def _resolve(self) -> tuple[Path | None, int, str]:
        path = unquote(urlsplit(self.path).path)
        if len(path) > 512:
            return None, 414, "path too long"
        target = (self.root / path.lstrip("/")).resolve()
        if self.root not in target.parents:
            return None, 404, "not found"
        if target.suffix not in SUFFIXES:
            return None, 404, f"only {', '.join(sorted(SUFFIXES))} files are served"
        if not target.is_file():
            return None, 404, "no such report"
        if target.stat().st_size > MAX_BYTES:
            return None, 413, "report too large to serve"
        return target, 200, ""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        target, code, why = self._resolve()
        if target is None:
            self.send_error(code, why)
            return
        body = target.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", SUFFIXES[target.suffix])
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):  # noqa: N802
        target, code, why = self._resolve()
        if target is None:
            self.send_error(code, why)
            return
        self.send_response(200)
        self.send_header("Content-Type", SUFFIXES[target.suffix])
        self.send_header("Content-Length", str(target.stat().st_size))
        self.end_headers()


def server(root: Path, host: str = "127.0.0.1", port: int = 3002) -> http.server.ThreadingHTTPServer:
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    httpd = http.server.ThreadingHTTPServer((host, port), partial(_Handler, root=root))
    httpd.daemon_threads = True
    return httpd


def serve_in_thread(root: Path, port: int = 0) -> tuple[http.server.ThreadingHTTPServer, str]:
    httpd = server(root, port=port)
    threading.Thread(target=httpd.serve_forever, name="vigil-reports", daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
