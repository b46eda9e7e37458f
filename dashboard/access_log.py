"""gunicorn's access log, each line made from only the request and response fields its format prints.

gunicorn's ``Logger.atoms()`` copies every request header, response header and WSGI environ entry into the
line's fields and escapes each one, for a format that prints nine (the default): about a twentieth of every
request's instructions, and more the more headers a request carries (a signed API request carries four).
``AccessLogger`` gives it only what the format names, so the line it writes is the same, except that an
invitation link's token is printed as ``[token]``: it works until it is used or withdrawn, and the log is kept
and read by more people than the invited one.
Used by gunicorn through ``gunicorn.conf.py`` (``logger_class``).
"""
from __future__ import annotations

import functools
import re
from typing import NamedTuple

from gunicorn.glogging import Logger

# What gunicorn's own fields (h, r, u, f, a, ...) are made from.
_ENVIRON_OF_OWN_FIELDS = (
    "REMOTE_ADDR", "REQUEST_METHOD", "RAW_URI", "SERVER_PROTOCOL", "PATH_INFO", "QUERY_STRING", "HTTP_REFERER",
    "HTTP_USER_AGENT", "HTTP_AUTHORIZATION",
)
_FIELD = re.compile(r"%\(([^)]*)\)")
_INVITATION_LINK = "/invitations/"
# The link's path, at the start of a path or after a URL's host: /m/<merchant>/invitations/<id>/ is no secret.
_INVITATION_TOKEN = re.compile(r"((?:^|//[^/?#\s\"]*)/invitations/)[^/?#\s\"]+")
_HEADER_OR_ENVIRON_FIELD = re.compile(r"\{(.*)\}([ioe])")


class NamedFields(NamedTuple):
    request_headers: frozenset[str]  # lower case, as gunicorn matches them
    response_headers: frozenset[str]
    environ: frozenset[str]


@functools.lru_cache(maxsize=8)
def named_fields(access_log_format: str) -> NamedFields:
    """The headers and environ entries ``access_log_format`` prints (``%({name}i)s``, ``{name}o``, ``{name}e``)."""
    found: dict[str, set[str]] = {"i": set(), "o": set(), "e": set()}
    for field in _FIELD.findall(access_log_format):
        match = _HEADER_OR_ENVIRON_FIELD.fullmatch(field.lower())
        if match:
            found[match.group(2)].add(match.group(1))
    return NamedFields(frozenset(found["i"]), frozenset(found["o"]), frozenset(found["e"]))


class _Message:
    """A request or a response as gunicorn's ``atoms()`` reads it, with only the headers the format prints."""

    __slots__ = ("headers", "status", "sent")

    def __init__(self, headers: list, status=None, sent=None) -> None:
        self.headers = headers
        self.status = status
        self.sent = sent


class AccessLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        named = named_fields(self.cfg.access_log_format)
        narrowed = {name: environ[name] for name in _ENVIRON_OF_OWN_FIELDS if name in environ}
        if named.environ:
            narrowed.update((name, value) for name, value in environ.items() if name.lower() in named.environ)
        request_headers = [(name, value) for name, value in req.headers if name.lower() in named.request_headers] \
            if named.request_headers else []
        response_headers = [(name, value) for name, value in resp.headers if name.lower() in named.response_headers] \
            if named.response_headers else []
        if _INVITATION_LINK in narrowed.get("RAW_URI", "") or _INVITATION_LINK in narrowed.get("HTTP_REFERER", ""):
            narrowed = {name: _without_link_token(value) for name, value in narrowed.items()}
            request_headers = [(name, _without_link_token(value)) for name, value in request_headers]
        return super().atoms(
            _Message(response_headers, resp.status, getattr(resp, "sent", None)), _Message(request_headers),
            narrowed, request_time,
        )


def _without_link_token(value):
    return _INVITATION_TOKEN.sub(r"\1[token]", value) if isinstance(value, str) else value
