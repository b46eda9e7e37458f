"""Request plumbing: which proxy headers to believe, when a signed-in session ends, and the
Content-Security-Policy header."""
from __future__ import annotations

import http
import time
import zoneinfo

from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CheckableLazyObject, CSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.contrib.auth import logout
from django.contrib.messages.middleware import MessageMiddleware
from django.utils import timezone

from .net import is_trusted_proxy
from .settings_cache import cached_setting, until_settings_change

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


class DashboardMessageMiddleware(MessageMiddleware):
    """Django's messages for the dashboard's pages only.

    The sandbox API never shows one, and setting up the storage (a signed cookie's and the session's) on each of
    its requests cost a sixth of an in-process ping (bench/README.md).
    """

    def process_request(self, request):
        if not request.path_info.startswith(API_PATH_PREFIX):
            super().process_request(request)


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


# What a view, a decorator of django-csp or a template can set to make a response's policy its own.
_PER_RESPONSE_POLICY = (
    "_csp_config", "_csp_update", "_csp_replace", "_csp_exempt",
    "_csp_config_ro", "_csp_update_ro", "_csp_replace_ro", "_csp_exempt_ro",
)


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware, with the settings' policy built once per settings change.

    django-csp builds both headers from the settings on every response, a large share of an API request's cost
    (bench/README.md). A response whose policy is the settings' alone (no nonce drawn, no csp decorator) gets the
    headers built once; any other goes through django-csp as before. Built once means: the policy settings change
    only as Django announces it (``setting_changed``: deploys, ``override_settings``), and a lazy directive value
    (``reverse_lazy``) is turned into text once, under the first request's script prefix.
    """

    def process_response(self, request, response):
        if getattr(request, "_csp_nonce", None) is not None or any(
            hasattr(response, name) for name in _PER_RESPONSE_POLICY
        ):
            return super().process_response(request, response)
        # django-csp leaves Django's debug pages alone, whose inline styles and scripts the policy would block.
        if cached_setting("DEBUG") and response.status_code in (http.HTTPStatus.NOT_FOUND,
                                                                  http.HTTPStatus.INTERNAL_SERVER_ERROR):
            return response
        for header, policy, excluded_prefixes in settings_policies():
            if policy and header not in response and not request.path_info.startswith(excluded_prefixes):
                response[header] = policy
        # As django-csp does: a nonce drawn after the header was written would be in no policy.
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)
        return response


@until_settings_change
def settings_policies() -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """Each header's policy as django-csp builds it from the settings, with the path prefixes it skips."""
    return tuple(
        (header, build_policy(report_only=report_only),
         tuple((getattr(settings, setting, None) or {}).get("EXCLUDE_URL_PREFIXES", None) or ()))
        for header, report_only, setting in (
            (HEADER, False, "CONTENT_SECURITY_POLICY"),
            (HEADER_REPORT_ONLY, True, "CONTENT_SECURITY_POLICY_REPORT_ONLY"),
        )
    )
