"""The region explorer's HTTP layer: the page, its static files and the JSON API.

`make_server` binds an `ExplorerServer` (standard library, threading) around an
`evaluation.explore_app.Explorer`; its `Handler` routes requests to the app. The page
works offline: its HTML, CSS and JavaScript ship in `explore_static/`, nothing is
fetched from elsewhere. Safety defaults: the CLI binds to 127.0.0.1 (on loopback,
other Host names are refused, against DNS rebinding; cross-origin POSTs are refused
everywhere), request bodies are capped in bytes before they are read, every response
carries a strict Content-Security-Policy, and images are served only by a name from
the app's own listing; thumbnails only of the rows of an open archive index, found by
index name and row id (never by a path from the client), decoded and re-encoded, so
no file's bytes are passed on as they are. The CLI is `python -m evaluation.explore`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from evaluation.explore_app import Explorer, NotFound, TooLarge

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("explore_static")
MAX_REQUEST_BYTES = 64 * 1024  # a compare request is a few hundred bytes of JSON
_STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def is_loopback(host: str) -> bool:
    """Whether a bind address is loopback only (127.0.0.0/8, ::1 or localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ExplorerServer(ThreadingHTTPServer):
    """A threading HTTP server holding the `Explorer` its handlers serve.

    Args:
        address: (host, port); port 0 picks a free port.
        explorer: The app.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], explorer: Explorer):
        self.explorer = explorer
        self.loopback = is_loopback(address[0])
        if ":" in address[0]:  # an IPv6 address
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        """The page's address."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    """The page, its files and the JSON API.

    GET `/` (the page), `/static/<file>`, `/api/info` (scorers, indexes, limits),
    `/api/images` (the listing), `/api/image/<name>` (PNG of the decoded, oriented
    image), `/api/history` (JSON), `/api/history.csv` (region-pair CSV),
    `/api/similar/group?index=<name>&image=<name>` (what "exclude this lesion"
    leaves out), `/api/thumb?index=<name>&id=<row id>` (JPEG thumbnail of an index
    row); POST `/api/upload?name=<file name>` (the raw file as the body),
    `/api/compare` ({image_a, box_a, image_b, box_b}), `/api/similar` ({index,
    image, box, k, exclude_own}), `/api/history/clear`. Errors are JSON
    `{"error": message}`: 400 bad input, 404 unknown name, 413 too large.
    """

    server: ExplorerServer
    server_version = "dermsim-explorer"
    sys_version = ""

    # -- plumbing

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("Cache-Control", headers.pop("cache", "no-store"))
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _host_allowed(self) -> bool:
        """On loopback, refuse other Host names (a DNS-rebinding page cannot reach it)."""
        if not self.server.loopback:
            return True
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        return host in ("localhost", "127.0.0.1", "::1") or is_loopback(host)

    def _length(self) -> int:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ValueError("expected a Content-Length header")
        return int(length)

    def _body(self, limit: int) -> bytes:
        length = self._length()
        if length > limit:
            raise TooLarge(f"request of {length} bytes exceeds the limit of {limit} bytes")
        return self.rfile.read(length)

    def _dispatch(self, routes: dict) -> None:
        """Call the route for the path: keys ending in "/" take the rest of the path."""
        if not self._host_allowed():
            self._error(HTTPStatus.FORBIDDEN, "unexpected Host header")
            return
        parts = urlsplit(self.path)
        path = parts.path
        try:
            for route, handler in routes.items():
                if path == route:
                    handler("", parts.query)
                    return
                if route.endswith("/") and route != "/" and path.startswith(route):
                    handler(path[len(route) :], parts.query)
                    return
            self._error(HTTPStatus.NOT_FOUND, f"no such page {path!r}")
        except NotFound as err:
            self._error(HTTPStatus.NOT_FOUND, str(err))
        except TooLarge as err:
            self.close_connection = True  # the body was not read
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(err))
        except (ValueError, FileNotFoundError) as err:
            self._error(HTTPStatus.BAD_REQUEST, str(err).splitlines()[0][:500])
        except Exception:  # a bug: logged in full, answered briefly
            log.exception("%s %s failed", self.command, path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (see the server log)")

    def do_GET(self) -> None:
        """Serve the page, its files, images and the JSON API."""
        self._dispatch({
            "/": self._index,
            "/static/": self._static,
            "/api/info": lambda *_: self._json(200, self.server.explorer.info()),
            "/api/images": lambda *_: self._json(
                200, {"images": self.server.explorer.image_list()}
            ),
            "/api/image/": self._image,
            "/api/history": lambda *_: self._json(
                200, {"history": self.server.explorer.history_rows()}
            ),
            "/api/history.csv": self._history_csv,
            "/api/similar/group": self._group,
            "/api/thumb": self._thumb,
        })  # fmt: skip

    do_HEAD = do_GET

    def do_POST(self) -> None:
        """Uploads, comparisons and clearing the history."""
        origin = self.headers.get("Origin")
        if origin and urlsplit(origin).netloc != self.headers.get("Host"):
            self._error(HTTPStatus.FORBIDDEN, "cross-origin request refused")
            return
        self._dispatch({
            "/api/upload": self._upload,
            "/api/compare": self._compare,
            "/api/similar": self._similar,
            "/api/history/clear": self._clear,
        })  # fmt: skip

    # -- routes

    def _index(self, *_) -> None:
        self._static("index.html", "")

    def _static(self, name: str, _query: str) -> None:
        name = unquote(name)
        path = (STATIC / name).resolve()
        if (
            not path.is_relative_to(STATIC.resolve())
            or not path.is_file()
            or path.suffix not in _STATIC_TYPES
        ):
            raise NotFound(f"no such file {name!r}")
        self._send(200, path.read_bytes(), _STATIC_TYPES[path.suffix])

    def _image(self, name: str, _query: str) -> None:
        png = self.server.explorer.image_png(unquote(name))
        self._send(200, png, "image/png", cache="private, max-age=300")

    def _history_csv(self, *_) -> None:
        self._send(
            200,
            self.server.explorer.history_csv().encode(),
            "text/csv; charset=utf-8",
            Content_Disposition='attachment; filename="explorer-history.csv"',
        )

    def _upload(self, _rest: str, query: str) -> None:
        filename = (parse_qs(query).get("name") or ["upload"])[0]
        self.server.explorer.check_upload_size(self._length(), filename)
        data = self._body(self.server.explorer.max_upload_bytes)
        self._json(200, self.server.explorer.upload(data, filename))

    def _request(self) -> Any:
        """The JSON body of a POST (capped in bytes)."""
        try:
            return json.loads(self._body(MAX_REQUEST_BYTES) or b"null")
        except json.JSONDecodeError as err:
            raise ValueError(f"expected a JSON request body ({err})") from None

    def _compare(self, *_) -> None:
        self._json(200, self.server.explorer.compare(self._request()))

    def _similar(self, *_) -> None:
        self._json(200, self.server.explorer.similar(self._request()))

    def _group(self, _rest: str, query: str) -> None:
        params = _params(query, "index", "image")
        self._json(200, self.server.explorer.group(params["index"], params["image"]))

    def _thumb(self, _rest: str, query: str) -> None:
        params = _params(query, "index", "id")
        jpeg = self.server.explorer.thumbnail(params["index"], params["id"])
        self._send(200, jpeg, "image/jpeg", cache="private, max-age=300")

    def _clear(self, *_) -> None:
        self._body(MAX_REQUEST_BYTES)
        self.server.explorer.clear_history()
        self._json(200, {"history": []})


def _params(query: str, *names: str) -> dict[str, str]:
    """A query string's parameters `names`, each given once.

    Raises:
        ValueError: If one is missing, empty or repeated.
    """
    values = parse_qs(query, keep_blank_values=True)
    out = {}
    for name in names:
        given = values.get(name, [])
        if len(given) != 1 or not given[0]:
            raise ValueError(f"expected one {name}=... parameter ({', '.join(names)})")
        out[name] = given[0]
    return out


def make_server(explorer: Explorer, host: str = "127.0.0.1", port: int = 0) -> ExplorerServer:
    """Bind the explorer's HTTP server (not yet serving); port 0 picks a free port.

    Raises:
        ValueError: If the address cannot be bound (in use, not a local address).
    """
    if not is_loopback(host):
        log.warning(
            "binding to %s: the explorer is reachable from other machines and has no "
            "authentication; anyone who can reach it can upload images and run the scorers",
            host,
        )
    try:
        return ExplorerServer((host, port), explorer)
    except OSError as err:
        raise ValueError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None
