"""The rating studio's HTTP layer: the rating page, the owner's page and their JSON API.

`make_server` binds a `StudioServer` (standard library, threading) around a
`evaluation.studio.Study`. The pages work offline (HTML, CSS and JavaScript ship in
`studio_static/`) and share the explorer's safety defaults (`evaluation.web`: strict
CSP, body caps, Host check on loopback, cross-origin POSTs refused).

Access: a rater's link `/start/<token>` is exchanged for a session cookie (one per
study; HttpOnly, SameSite=Strict, and `__Host-` + Secure when served over TLS or behind
a TLS proxy) and the browser is
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
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from evaluation.studio import OWNER, Denied, Study
from evaluation.studio_results import status
from evaluation.web import Forbidden, JsonHandler, is_loopback

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("studio_static")
_START = "/start/"
HANDSHAKE_SECONDS = 15  # a TLS client that says nothing is dropped after this


def cookie_name(study: str, secure: bool) -> str:
    """The session cookie's name: one per study, `__Host-` prefixed over HTTPS.

    Cookies ignore ports, so studies served on one host must not share a name; the
    prefix makes the browser keep it host-only, Secure and on Path=/.
    """
    name = "dermsim_" + re.sub(r"[^A-Za-z0-9_]", "_", study)
    return f"__Host-{name}" if secure else name


def _cookie(header: str, name: str) -> str | None:
    """One cookie's value from a Cookie header, or None.

    Read leniently: other apps' cookies on the same host may not be valid for
    `http.cookies`, which would then drop the whole header.
    """
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


class StudioServer(ThreadingHTTPServer):
    """A threading HTTP(S) server holding the study its handlers serve.

    Args:
        address: (host, port); port 0 picks a free port.
        study: The open study.
        tls: An SSL context to serve HTTPS with, or None.
        public_origin: Behind a TLS proxy: the address raters reach (its Host and Origin
            are accepted; the cookie is Secure). None: no proxy.
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        study: Study,
        tls: ssl.SSLContext | None = None,
        public_origin: str | None = None,
    ):
        self.study = study
        self.loopback = is_loopback(address[0])
        self.tls = tls
        self.public_origin = public_origin.rstrip("/") if public_origin else None
        self.secure_cookies = tls is not None or public_origin is not None
        self.cookie = cookie_name(study.name, self.secure_cookies)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def finish_request(self, request, client_address) -> None:
        """Serve one connection; over TLS, its handshake first, in its own thread.

        The handshake has a time limit: a client that connects and says nothing cannot
        hold up the others.
        """
        if self.tls is not None:
            request.settimeout(HANDSHAKE_SECONDS)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as err:
                log.debug("TLS handshake with %s failed: %s", client_address[0], err)
                return
        super().finish_request(request, client_address)

    @property
    def url(self) -> str:
        """The server's base address."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"{'https' if self.tls else 'http'}://{host}:{port}/"

    def link(self, token: str) -> str:
        """A rater's (or the owner's) personal link."""
        return f"{self.public_origin or self.url.rstrip('/')}/start/{token}"


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
        session = _cookie(self.headers.get("Cookie") or "", self.server.cookie)
        try:
            return self.server.study.rater_of(session)
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
            Set_Cookie=f"{self.server.cookie}={session}; {flags}",
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
        self.send(200, data, "image/jpeg")  # no-store: patient images stay off the disk cache

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
    public_origin: str | None = None,
) -> StudioServer:
    """Bind the studio's server (not yet serving); port 0 picks a free port.

    Beyond loopback, patient images cross the network: the server needs a certificate
    and key (HTTPS), or a TLS proxy in front of it, named by `public_origin` (the
    https:// address raters reach).

    Raises:
        ValueError: On a non-loopback address without TLS or proxy, a certificate
            without key (or the reverse), an unreadable certificate, a public origin
            that is not https://host[:port], or an address that cannot be bound.
    """
    if (cert is None) != (key is None):
        raise ValueError("give both --cert and --key (HTTPS), or neither")
    if public_origin is not None:
        parts = urlsplit(public_origin)
        if parts.scheme != "https" or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError(
                f"--behind-tls-proxy {public_origin!r}: expected the proxy's address, "
                "https://host[:port]"
            )
    if not is_loopback(host) and cert is None and public_origin is None:
        raise ValueError(
            f"--host {host} reaches other machines: give --cert and --key (HTTPS), or "
            "--behind-tls-proxy https://<address> when a TLS proxy serves the study"
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
        return StudioServer((host, port), study, tls, public_origin)
    except OSError as err:
        raise ValueError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None
