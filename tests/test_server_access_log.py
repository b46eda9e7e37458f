"""gunicorn's access log through dashboard.access_log.AccessLogger: the same lines as gunicorn's own logger."""
from __future__ import annotations

import base64
import runpy
import socket
from datetime import timedelta
from pathlib import Path

import pytest
from gunicorn import http
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.http import wsgi

from dashboard.access_log import AccessLogger, named_fields

ROOT = Path(__file__).resolve().parent.parent

SIGNED = (
    b"POST /api/v2/accounts/list?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
    b"X-Processing-Key: sbx_309c3c677a7106f9f8a4ee217c5b9da93545d4e4\r\nX-Processing-Signature: " + b"ab" * 64
    + b"\r\nContent-Length: 2\r\n\r\n{}"
)
BROWSER = (
    b"GET /m/acme/keys/ HTTP/1.1\r\nHost: sandbox.example\r\nReferer: https://sandbox.example/m/acme/\r\n"
    b'User-Agent: Mozilla/5.0 "quoted"\r\nX-Forwarded-For: 203.0.113.7, 10.0.0.1\r\n'
    b"Authorization: Basic " + base64.b64encode(b"staff@acme.test:pw") + b"\r\n\r\n"
)
MINIMAL = b"GET /api/v2/ping HTTP/1.0\r\n\r\n"

DEFAULT_FORMAT = Config().access_log_format
NAMED_FORMAT = (
    '%(h)s %({x-processing-key}i)s %({X-Forwarded-For}i)s %({content-type}o)s %({X-FRAME-OPTIONS}o)s '
    '%({PATH_INFO}e)s %({wsgi.url_scheme}e)s %({CONTENT_LENGTH}e)s %({nothing}i)s %({nothing}o)s %({nothing}e)s'
)


def _parsed(raw: bytes, cfg: Config):
    """The request, response and environ gunicorn's sync worker would log for ``raw``."""
    client, server = socket.socketpair()
    with client, server:
        client.sendall(raw)
        request = next(http.get_parser(cfg, server, ("127.0.0.1", 5555)))
        response, environ = wsgi.create(request, server, ("127.0.0.1", 5555), ("127.0.0.1", 8000), cfg)
    response.status = "200 OK"
    response.headers = [("Content-Type", "application/json"), ("X-Frame-Options", "DENY")]
    response.sent = 457
    return response, request, environ


def _line(logger_class, access_log_format: str, raw: bytes, monkeypatch) -> str:
    cfg = Config()
    cfg.set("access_log_format", access_log_format)
    logger = logger_class(cfg)
    monkeypatch.setattr(logger, "now", lambda: "[27/Nov/2026:19:33:28 +0000]")
    response, request, environ = _parsed(raw, cfg)
    atoms = logger.atoms(response, request, environ, timedelta(seconds=1, microseconds=2345))
    return access_log_format % logger.atoms_wrapper_class(atoms)


def _every_own_field_format() -> str:
    """A format printing each field gunicorn makes of its own (h, r, s, ... whatever this version has)."""
    cfg = Config()
    response, request, environ = _parsed(BROWSER, cfg)
    own = [name for name in Logger(cfg).atoms(response, request, environ, timedelta()) if not name.startswith("{")]
    assert {"h", "u", "r", "s", "b", "f", "a", "T", "D"} <= set(own)
    return " ".join(f"%({name})s" for name in own)


@pytest.mark.parametrize("access_log_format", [DEFAULT_FORMAT, NAMED_FORMAT, _every_own_field_format()],
                         ids=["default", "named headers and environ", "every own field"])
@pytest.mark.parametrize("raw", [SIGNED, BROWSER, MINIMAL], ids=["signed API request", "browser", "minimal"])
def test_each_line_is_the_one_gunicorns_logger_writes(access_log_format, raw, monkeypatch):
    assert _line(AccessLogger, access_log_format, raw, monkeypatch) == _line(Logger, access_log_format, raw, monkeypatch)


def test_the_fields_a_format_names_are_found_in_any_case():
    assert named_fields(NAMED_FORMAT) == (
        {"x-processing-key", "x-forwarded-for", "nothing"},
        {"content-type", "x-frame-options", "nothing"},
        {"path_info", "wsgi.url_scheme", "content_length", "nothing"},
    )
    assert named_fields(DEFAULT_FORMAT) == (frozenset(), frozenset(), frozenset())


def test_lines_print_what_the_format_names_and_nothing_else(monkeypatch):
    line = _line(AccessLogger, NAMED_FORMAT, SIGNED, monkeypatch)
    assert line == (
        "127.0.0.1 sbx_309c3c677a7106f9f8a4ee217c5b9da93545d4e4 - application/json DENY /api/v2/accounts/list "
        "http 2 - - -"
    )
    assert _line(AccessLogger, DEFAULT_FORMAT, BROWSER, monkeypatch) == (
        '127.0.0.1 - staff@acme.test [27/Nov/2026:19:33:28 +0000] "GET /m/acme/keys/ HTTP/1.1" 200 457 '
        '"https://sandbox.example/m/acme/" "Mozilla/5.0 \\"quoted\\""'
    )


def test_every_gunicorn_started_here_uses_it():
    # gunicorn reads ./gunicorn.conf.py from its working directory: make serve, make bench and the production
    # test all start it from the project's root.
    assert runpy.run_path(str(ROOT / "gunicorn.conf.py"))["logger_class"] == "dashboard.access_log.AccessLogger"


TOKEN = "Zt3QpB8W-Kq1x_9bVmN4cR7yHs2LdE6fGa0uJo5iXwU"


def test_an_invitation_links_token_is_not_written_to_the_log(monkeypatch):
    link = (
        b"GET /invitations/" + TOKEN.encode() + b"/?utm=mail HTTP/1.1\r\nHost: sandbox.example\r\n"
        b"Referer: https://mail.example/read?u=https://sandbox.example/invitations/" + TOKEN.encode() + b"/\r\n\r\n"
    )
    for access_log_format in (DEFAULT_FORMAT, '%(r)s %(U)s %(q)s %({referer}i)s %({RAW_URI}e)s'):
        line = _line(AccessLogger, access_log_format, link, monkeypatch)
        untouched = _line(Logger, access_log_format, link, monkeypatch)

        assert TOKEN not in line
        assert line == untouched.replace(TOKEN, "[token]")
        assert "/invitations/[token]/" in line


def test_an_owners_invitation_pages_keep_their_numbers(monkeypatch):
    # Only a link's token is a secret: /m/<merchant>/invitations/<id>/ is an Owner's page, logged as it is.
    raw = b"POST /m/acme/invitations/17/withdraw/ HTTP/1.1\r\nHost: sandbox.example\r\n\r\n"
    line = _line(AccessLogger, DEFAULT_FORMAT, raw, monkeypatch)
    assert line == _line(Logger, DEFAULT_FORMAT, raw, monkeypatch)
    assert "/m/acme/invitations/17/withdraw/" in line
