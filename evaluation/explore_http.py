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

import logging
import socket
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote

from evaluation.explore_app import Explorer
from evaluation.web import MAX_REQUEST_BYTES, JsonHandler, is_loopback, params

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("explore_static")
__all__ = ["ExplorerServer", "Handler", "is_loopback", "make_server"]


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


class Handler(JsonHandler):
    """The page, its files and the JSON API.

    GET `/` (the page), `/static/<file>`, `/api/info` (scorers, indexes, limits),
    `/api/images` (the listing), `/api/image/<name>` (PNG of the decoded, oriented
    image), `/api/history` (JSON), `/api/history.csv` (region-pair CSV),
    `/api/similar/group?index=<name>&image=<name>` (what "exclude this lesion"
    leaves out), `/api/thumb?index=<name>&id=<row id>` (JPEG thumbnail of an index
    row); POST `/api/upload?name=<file name>` (the raw file as the body),
    `/api/compare` ({image_a, box_a or polygon_a, image_b, box_b or polygon_b}; a
    polygon is an outline "x1,y1 x2,y2 ..." in source pixels), `/api/similar`
    ({index, image, box or polygon, k, exclude_own}), `/api/history/clear`. Errors
    are JSON `{"error": message}`: 400 bad input, 404 unknown name, 413 too large.
    """

    server: ExplorerServer
    server_version = "dermsim-explorer"

    def do_GET(self) -> None:
        """Serve the page, its files, images and the JSON API."""
        self.dispatch({
            "/": self._index,
            "/static/": self._static,
            "/api/info": lambda *_: self.json(200, self.server.explorer.info()),
            "/api/images": lambda *_: self.json(
                200, {"images": self.server.explorer.image_list()}
            ),
            "/api/image/": self._image,
            "/api/history": lambda *_: self.json(
                200, {"history": self.server.explorer.history_rows()}
            ),
            "/api/history.csv": self._history_csv,
            "/api/similar/group": self._group,
            "/api/thumb": self._thumb,
        })  # fmt: skip

    do_HEAD = do_GET

    def do_POST(self) -> None:
        """Uploads, comparisons and clearing the history."""
        if not self.same_origin():
            self.error(403, "cross-origin request refused")
            return
        self.dispatch({
            "/api/upload": self._upload,
            "/api/compare": self._compare,
            "/api/similar": self._similar,
            "/api/history/clear": self._clear,
        })  # fmt: skip

    # -- routes

    def _index(self, *_) -> None:
        self._static("index.html", "")

    def _static(self, name: str, _query: str) -> None:
        self.static(STATIC, name)

    def _image(self, name: str, _query: str) -> None:
        png = self.server.explorer.image_png(unquote(name))
        self.send(200, png, "image/png", cache="private, max-age=300")

    def _history_csv(self, *_) -> None:
        self.send(
            200,
            self.server.explorer.history_csv().encode(),
            "text/csv; charset=utf-8",
            Content_Disposition='attachment; filename="explorer-history.csv"',
        )

    def _upload(self, _rest: str, query: str) -> None:
        filename = (parse_qs(query).get("name") or ["upload"])[0]
        self.server.explorer.check_upload_size(self.length(), filename)
        data = self.body(self.server.explorer.max_upload_bytes)
        self.json(200, self.server.explorer.upload(data, filename))

    def _compare(self, *_) -> None:
        self.json(200, self.server.explorer.compare(self.request_json()))

    def _similar(self, *_) -> None:
        self.json(200, self.server.explorer.similar(self.request_json()))

    def _group(self, _rest: str, query: str) -> None:
        given = params(query, "index", "image")
        self.json(200, self.server.explorer.group(given["index"], given["image"]))

    def _thumb(self, _rest: str, query: str) -> None:
        given = params(query, "index", "id")
        jpeg = self.server.explorer.thumbnail(given["index"], given["id"])
        self.send(200, jpeg, "image/jpeg", cache="private, max-age=300")

    def _clear(self, *_) -> None:
        self.body(MAX_REQUEST_BYTES)
        self.server.explorer.clear_history()
        self.json(200, {"history": []})


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
