"""The HTTP plumbing the project's local pages share (region explorer, rating studio).

Standard library only. `JsonHandler` is a request handler with the safety defaults of
every page the project serves: a strict Content-Security-Policy (`CSP`: scripts,
styles and images from the page's own origin only), `nosniff`, no referrer, no caching
unless asked, request bodies capped in bytes before they are read, and, on a loopback
server, other Host names refused (a DNS-rebinding page cannot reach it). Routes are a
dict of path -> handler; errors are JSON `{"error": message}` with the status of the
exception raised (`NotFound` 404, `Forbidden` 403, `TooLarge` 413, `ValueError` 400).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import signal
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
MAX_REQUEST_BYTES = 64 * 1024  # a JSON request of these pages is a few hundred bytes


class NotFound(LookupError):
    """A name or page that does not exist (answered 404)."""


class Forbidden(PermissionError):
    """A request without the right to what it asks (answered 403)."""


class TooLarge(ValueError):
    """A request body above its byte cap (answered 413)."""


def is_loopback(host: str) -> bool:
    """Whether a bind address is loopback only (127.0.0.0/8, ::1 or localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve_until_stopped(server: Any) -> None:
    """Serve until Ctrl+C or SIGTERM (so that callers' clean-up runs), then close."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        server.server_close()


def params(query: str, *names: str) -> dict[str, str]:
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


Route = Callable[[str, str], None]  # (rest of the path, query string)


class JsonHandler(BaseHTTPRequestHandler):
    """A request handler with the shared safety defaults; subclasses add routes.

    The server it runs in must have a boolean `loopback` attribute (bound to a
    loopback address: other Host names are refused) and may have `public_origin`
    (e.g. "https://ratings.example.org": the address a TLS proxy in front of it serves,
    whose Host and Origin are then accepted too). An idle connection is closed after
    `timeout` seconds.
    """

    sys_version = ""
    timeout = 60

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        """Send a whole response with the safety headers; `cache` sets Cache-Control."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Cache-Control", headers.pop("cache", "no-store"))
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def json(self, status: int, payload: Any, **headers: str) -> None:
        """Send `payload` as JSON."""
        self.send(status, json.dumps(payload).encode(), "application/json", **headers)

    def error(self, status: int, message: str) -> None:
        """Send `{"error": message}`."""
        self.json(status, {"error": message})

    def _public(self) -> str | None:
        """The public origin's host[:port], when the server is told one."""
        public = getattr(self.server, "public_origin", None)
        return urlsplit(public).netloc.lower() if public else None

    def host_allowed(self) -> bool:
        """On loopback, refuse other Host names (a DNS-rebinding page cannot reach it)."""
        if not self.server.loopback:
            return True
        given = (self.headers.get("Host") or "").lower()
        if given and given == self._public():
            return True
        host = given.rsplit(":", 1)[0].strip("[]")
        return host in ("localhost", "127.0.0.1", "::1") or is_loopback(host)

    def same_origin(self) -> bool:
        """Whether a state-changing request comes from the page's own origin.

        A browser sends `Origin` with every cross-origin POST (and most same-origin
        ones); a request without it comes from a program, not from another site's page.
        Behind a proxy, the page's origin is the public one.
        """
        origin = self.headers.get("Origin")
        if not origin:
            return True
        netloc = urlsplit(origin).netloc.lower()
        return netloc == (self.headers.get("Host") or "").lower() or netloc == self._public()

    def length(self) -> int:
        """The request's Content-Length."""
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ValueError("expected a Content-Length header")
        return int(length)

    def body(self, limit: int = MAX_REQUEST_BYTES) -> bytes:
        """The request body, refused above `limit` bytes before it is read."""
        length = self.length()
        if length > limit:
            raise TooLarge(f"request of {length} bytes exceeds the limit of {limit} bytes")
        return self.rfile.read(length)

    def request_json(self) -> Any:
        """The JSON body of a POST (capped at `MAX_REQUEST_BYTES`)."""
        try:
            return json.loads(self.body(MAX_REQUEST_BYTES) or b"null")
        except json.JSONDecodeError as err:
            raise ValueError(f"expected a JSON request body ({err})") from None

    def static(self, folder: Path, name: str) -> None:
        """Serve `folder/name` if it is a file of a known type inside `folder`."""
        name = unquote(name)
        path = (folder / name).resolve()
        if (
            not path.is_relative_to(folder.resolve())
            or not path.is_file()
            or path.suffix not in STATIC_TYPES
        ):
            raise NotFound(f"no such file {name!r}")
        self.send(200, path.read_bytes(), STATIC_TYPES[path.suffix])

    def dispatch(self, routes: dict[str, Route], shown_path: str | None = None) -> None:
        """Call the route for the path: keys ending in "/" take the rest of the path.

        Args:
            routes: Path -> handler(rest of the path, query string).
            shown_path: The path as errors and the log may show it (default: as sent).
        """
        if not self.host_allowed():
            self.error(HTTPStatus.FORBIDDEN, "unexpected Host header")
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
            self.error(HTTPStatus.NOT_FOUND, f"no such page {shown_path or path!r}")
        except NotFound as err:
            self.error(HTTPStatus.NOT_FOUND, str(err))
        except Forbidden as err:
            self.error(HTTPStatus.FORBIDDEN, str(err))
        except TooLarge as err:
            self.close_connection = True  # the body was not read
            self.error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(err))
        except (ValueError, FileNotFoundError) as err:
            self.error(HTTPStatus.BAD_REQUEST, str(err).splitlines()[0][:500])
        except Exception:  # a bug: logged in full, answered briefly
            log.exception("%s %s failed", self.command, shown_path or path)
            self.error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (see the server log)")
