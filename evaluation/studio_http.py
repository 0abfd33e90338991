"""The rating studio's HTTP layer: the rating page, the owner's page and their JSON API.

`make_server` binds a `StudioServer` (standard library, threading) around a
`evaluation.studio.Study`. The pages work offline (HTML, CSS and JavaScript ship in
`studio_static/`) and share the explorer's safety defaults (`evaluation.web`: strict
CSP, body caps, Host check on loopback, cross-origin POSTs refused).

Access: a rater's link `/start/<token>` is exchanged for a session cookie (HttpOnly,
SameSite=Strict, Secure when served over TLS or behind a TLS proxy) and the browser is
sent on to `/` without the token; the token never reaches the log. Every API call finds
the rater by that cookie and reaches that rater's screens only; no cookie, an unknown
one, or a rater's cookie on the owner's API is answered 403.

Routes: GET `/` (rating page), `/owner` (owner's page), `/static/<file>`,
`/start/<token>`, `/api/me` (progress), `/api/screen/<position>`,
`/api/image/<position>/<name>` (JPEG), `/api/status` (owner); POST `/api/answer`.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import ThreadingHTTPServer
from pathlib import Path

from evaluation.studio import OWNER, Denied, Study
from evaluation.studio_results import status
from evaluation.web import Forbidden, JsonHandler, is_loopback

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("studio_static")
COOKIE = "dermsim_rating_session"
_START = "/start/"


class StudioServer(ThreadingHTTPServer):
    """A threading HTTP(S) server holding the study its handlers serve.

    Args:
        address: (host, port); port 0 picks a free port.
        study: The open study.
        tls: An SSL context to serve HTTPS with, or None.
        secure_cookies: Mark the session cookie Secure (HTTPS, or behind a TLS proxy).
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        study: Study,
        tls: ssl.SSLContext | None = None,
        secure_cookies: bool = False,
    ):
        self.study = study
        self.loopback = is_loopback(address[0])
        self.tls = tls
        self.secure_cookies = secure_cookies or tls is not None
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    @property
    def url(self) -> str:
        """The server's base address."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"{'https' if self.tls else 'http'}://{host}:{port}/"

    def link(self, token: str) -> str:
        """A rater's (or the owner's) personal link."""
        return f"{self.url}start/{token}"


class Handler(JsonHandler):
    """The pages, the login exchange and the JSON API (see the module docstring)."""

    server: StudioServer
    server_version = "dermsim-studio"

    def log_message(self, format: str, *args) -> None:
        message = format % args
        message = re.sub(r"/start/[^ ?\"]*", "/start/<token>", message)  # tokens stay out
        log.debug("%s %s", self.address_string(), message)

    def _shown_path(self) -> str:
        return _START + "<token>" if self.path.startswith(_START) else self.path.split("?")[0]

    def do_GET(self) -> None:
        """Pages, static files, the login exchange and the read-only API."""
        self.dispatch(
            {
                "/": lambda *_: self.static(STATIC, "rate.html"),
                "/owner": lambda *_: self.static(STATIC, "owner.html"),
                "/static/": lambda name, _: self.static(STATIC, name),
                _START: self._start,
                "/api/me": lambda *_: self.json(200, self._progress()),
                "/api/screen/": self._screen,
                "/api/image/": self._image,
                "/api/status": self._status,
            },
            self._shown_path(),
        )

    do_HEAD = do_GET

    def do_POST(self) -> None:
        """Answers."""
        if not self.same_origin():
            self.error(HTTPStatus.FORBIDDEN, "cross-origin request refused")
            return
        self.dispatch({"/api/answer": self._answer}, self._shown_path())

    # -- access

    def _rater(self) -> str:
        """The rater of the request's session cookie; 403 without a valid one."""
        try:
            cookie = SimpleCookie(self.headers.get("Cookie") or "")
        except CookieError:
            cookie = SimpleCookie()
        morsel = cookie.get(COOKIE)
        try:
            return self.server.study.rater_of(morsel.value if morsel else None)
        except Denied as err:
            raise Forbidden(str(err)) from None

    def _a_rater(self) -> str:
        rater = self._rater()
        if rater == OWNER:
            raise Forbidden("the owner's link has no screens to rate; open /owner")
        return rater

    def _start(self, token: str, _query: str) -> None:
        try:
            rater, session = self.server.study.login(token)
        except Denied:
            self.send(
                HTTPStatus.FORBIDDEN, _page("This link is not valid (ask the study owner)."),
                "text/html; charset=utf-8",
            )  # fmt: skip
            return
        flags = "HttpOnly; SameSite=Strict; Path=/" + (
            "; Secure" if self.server.secure_cookies else ""
        )
        target = "/owner" if rater == OWNER else "/"
        log.info("%s opened the study", "the owner" if rater == OWNER else f"rater {rater}")
        # A page, not a redirect: the browser moves on from the site itself, so the Strict
        # cookie goes with it even when the link was opened from another site (a mail).
        self.send(
            200,
            _page("Signed in.", f'<meta http-equiv="refresh" content="0; url={target}">',
                  f'<a href="{target}">Continue</a>'),
            "text/html; charset=utf-8",
            Set_Cookie=f"{COOKIE}={session}; {flags}",
        )  # fmt: skip

    # -- API

    def _progress(self) -> dict:
        rater = self._rater()
        if rater == OWNER:
            return {"owner": True, "study": self.server.study.name}
        return self.server.study.progress(rater)

    def _position(self, text: str) -> int:
        if not text.isdigit():
            raise ValueError(f"expected a screen number, got {text!r}")
        return int(text)

    def _screen(self, rest: str, _query: str) -> None:
        rater = self._a_rater()
        try:
            self.json(200, self.server.study.screen(rater, self._position(rest)))
        except Denied as err:
            raise Forbidden(str(err)) from None

    def _image(self, rest: str, _query: str) -> None:
        rater = self._a_rater()
        position, _, name = rest.partition("/")
        data = self.server.study.image(rater, self._position(position), name)
        self.send(200, data, "image/jpeg", cache="private, max-age=600")

    def _answer(self, *_) -> None:
        rater = self._a_rater()
        request = self.request_json()
        self.json(200, self.server.study.answer(rater, request))

    def _status(self, *_) -> None:
        if self._rater() != OWNER:
            raise Forbidden("only the study owner sees the status")
        self.json(200, status(self.server.study))


def _page(message: str, head: str = "", body: str = "") -> bytes:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>dermsim rating studio</title>{head}</head>"
        f"<body><p>{message}</p>{body}</body></html>"
    ).encode()


def make_server(
    study: Study,
    host: str = "127.0.0.1",
    port: int = 0,
    cert: str | None = None,
    key: str | None = None,
    behind_tls_proxy: bool = False,
) -> StudioServer:
    """Bind the studio's server (not yet serving); port 0 picks a free port.

    Beyond loopback, patient images cross the network: the server needs a certificate
    and key (HTTPS), or `behind_tls_proxy` when a TLS proxy in front of it does that.

    Raises:
        ValueError: On a non-loopback address without TLS or proxy, a certificate
            without key (or the reverse), an unreadable certificate, or an address that
            cannot be bound.
    """
    if (cert is None) != (key is None):
        raise ValueError("give both --cert and --key (HTTPS), or neither")
    if not is_loopback(host) and cert is None and not behind_tls_proxy:
        raise ValueError(
            f"--host {host} reaches other machines: give --cert and --key (HTTPS), or "
            "--behind-tls-proxy when a TLS proxy serves the study"
        )
    tls = None
    if cert is not None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            tls.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as err:
            raise ValueError(f"cannot load --cert {cert} / --key {key}: {err}") from None
    try:
        return StudioServer((host, port), study, tls, secure_cookies=behind_tls_proxy)
    except OSError as err:
        raise ValueError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None
