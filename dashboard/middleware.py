"""Request plumbing: which proxy headers to believe, and when a signed-in session ends."""
from __future__ import annotations

import time
import zoneinfo

from django.conf import settings
from django.contrib.auth import logout
from django.utils import timezone

from .net import is_trusted_proxy

API_PATH_PREFIX = "/api/"
# The session's clocks, kept in the session itself.
SIGNED_IN_AT_KEY = "signed_in_at"
LAST_SEEN_KEY = "last_seen"
# Refreshing "last seen" at most this often spares a session write on every page view.
LAST_SEEN_RESOLUTION_SECONDS = 60


class TrustedProxyMiddleware:
    """Drop X-Forwarded-Proto unless the direct peer is a trusted proxy.

    Django's SECURE_PROXY_SSL_HEADER believes the header from anyone; behind this middleware only
    TRUSTED_PROXIES can make a request count as HTTPS.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "HTTP_X_FORWARDED_PROTO" in request.META and not is_trusted_proxy(request.META.get("REMOTE_ADDR", "")):
            # SECURITY: a client cannot claim HTTPS (and so get Secure cookies' trust) by a header.
            del request.META["HTTP_X_FORWARDED_PROTO"]
        return self.get_response(request)


class SignedInUserMiddleware:
    """Runs ``for_user`` on dashboard requests of a signed-in user.

    The sandbox API has no sessions: looking one up would cost it a query and grant nothing.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path_info.startswith(API_PATH_PREFIX):
            user = getattr(request, "user", None)
            self.for_user(request, user if user is not None and user.is_authenticated else None)
        return self.get_response(request)

    def for_user(self, request, user) -> None:
        raise NotImplementedError


class SessionExpiryMiddleware(SignedInUserMiddleware):
    """End a signed-in session after SESSION_IDLE_SECONDS without a request or SESSION_ABSOLUTE_SECONDS in all."""

    def for_user(self, request, user) -> None:
        if user is None:
            return
        now = time.time()
        session = request.session
        signed_in_at = session.setdefault(SIGNED_IN_AT_KEY, now)
        last_seen = session.get(LAST_SEEN_KEY, now)
        if now - last_seen > settings.SESSION_IDLE_SECONDS or now - signed_in_at > settings.SESSION_ABSOLUTE_SECONDS:
            logout(request)
        elif now - last_seen >= LAST_SEEN_RESOLUTION_SECONDS or LAST_SEEN_KEY not in session:
            session[LAST_SEEN_KEY] = now


class UserTimeZoneMiddleware(SignedInUserMiddleware):
    """Show dates in the signed-in user's chosen time zone (UTC until they choose one)."""

    def for_user(self, request, user) -> None:
        if user is not None and user.time_zone != settings.TIME_ZONE:
            timezone.activate(zoneinfo.ZoneInfo(user.time_zone))
        else:
            timezone.deactivate()
