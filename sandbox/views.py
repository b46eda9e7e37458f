"""The sandbox API under /api/v2/: the platform's paths, headers, signature rule and error answers."""
from __future__ import annotations

import functools
import json
import logging
from datetime import UTC, datetime
from decimal import Decimal

from django.db import DatabaseError
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from dashboard.net import client_ip
from dashboard.settings_cache import cached_setting
from keys.models import ApiKey

from . import request_log
from .authentication import authenticate, find_key, read_body
from .errors import MethodNotAllowed, NotFound, SandboxError, Unavailable
from .models import Currency
from .refusal_log import log_refusal

logger = logging.getLogger("sandbox.api")


def decimal_text(value: Decimal) -> str:
    """Amounts as decimal strings, never floats and never exponents: 0.04, 0, 1500."""
    return format(value.normalize(), "f")


def signed_endpoint(view=None, *, with_balances: bool = False):
    """Authenticate a POST, log it for the merchant, and answer every refusal with its JSON error.

    ``with_balances``: the view reads the merchant's balances, which then come with the key, in its query.
    """
    if view is None:
        return functools.partial(signed_endpoint, with_balances=with_balances)

    @csrf_exempt
    @functools.wraps(view)
    def wrapper(request):
        key = None
        error_code = ""
        address = client_ip(request)
        now = current_time()
        try:
            if request.method != "POST":
                raise MethodNotAllowed("POST")
            body = read_body(request)
            key, balances = find_key(request, with_balances=with_balances)
            signed = authenticate(request, key, body, address)
            signed.balances = balances
            response = view(request, signed)
            request_log.mark_used(signed.key, address, now)
        except SandboxError as error:
            response, error_code = error.response(), error.code
            if isinstance(error, MethodNotAllowed):
                key = key_named_by(request)
            log_refusal(error.code, key.public_key if key is not None else "-", address, request.path)
        except DatabaseError:
            # SECURITY: fail closed: with no database nothing can be checked, so nothing is accepted.
            logger.exception("database error in the sandbox API")
            return Unavailable().response()
        record_for_key(key, request, now, address, response, error_code)
        return response

    return wrapper


def current_time() -> datetime:
    """``timezone.now()``, with USE_TZ read once per settings change: through Django's settings object it was half
    of timezone.now()'s 7k instructions, on every signed request."""
    return datetime.now(UTC) if cached_setting("USE_TZ") else datetime.now()


def key_named_by(request) -> ApiKey | None:
    """The key a request names, for its merchant's log only: a request with the wrong method or path is an
    integrator's mistake the "API requests" page should show, though nothing else was checked."""
    try:
        return find_key(request)[0]
    except DatabaseError:
        logger.exception("could not look up the key of a refused request")
        return None


def record_for_key(key: ApiKey | None, request, now, address: str | None, response, error_code: str) -> None:
    if key is None:
        return
    try:
        request_log.record_request(
            key=key, at=now, client_ip=address, method=request.method, path=request.path,
            status=response.status_code, error_code=error_code,
        )
    except DatabaseError:
        logger.exception("could not write the request log")


@csrf_exempt
def ping(request):
    if request.method not in ("GET", "HEAD"):
        return MethodNotAllowed("GET, HEAD").response()
    return HttpResponse("OK", content_type="text/plain")


@signed_endpoint(with_balances=True)
def accounts_list(request, signed):
    global _last_accounts_list
    # A kept lookup (sandbox.key_lookup_cache) hands every request the same balances until the database changes:
    # known by identity, they skip accounts_list_body's hashing and its comparison of each amount with the
    # cached one's (0.73 against 0.04 µs in a loop, for 8 currencies).
    balances, body = _last_accounts_list
    if balances is not signed.balances:
        balances = signed.balances
        body = accounts_list_body(balances)
        _last_accounts_list = (balances, body)
    return HttpResponse(body, content_type="application/json")


# The balances the last accounts/list answered and its body, replaced as a whole (threads may share it).
_last_accounts_list: tuple[tuple | None, bytes] = (None, b"")


@functools.lru_cache(maxsize=1024)
def accounts_list_body(balances: tuple[tuple[str, str, Decimal], ...]) -> bytes:
    """The JSON of accounts/list for these balances, made once per process: balances seldom change, and
    JsonResponse took about 20 µs of each request's in-process time (cProfile, 8 currencies)."""
    data = [{"currency": code, "type": type_, "balance": decimal_text(amount)} for code, type_, amount in balances]
    return json.dumps({"data": data}).encode()


@signed_endpoint
def currencies_list(request, signed):
    data = [
        {
            "id": currency.id,
            "type": currency.type,
            "currency": currency.code,
            "minimum_amount": decimal_text(currency.minimum_amount),
            "deposit_fee_percent": decimal_text(currency.deposit_fee_percent),
            "withdrawal_fee_percent": decimal_text(currency.withdrawal_fee_percent),
            "precision": currency.precision,
        }
        for currency in Currency.objects.all()
    ]
    return JsonResponse({"data": data})


@csrf_exempt
def not_found(request, rest=""):
    response = NotFound().response()
    record_for_key(key_named_by(request), request, current_time(), client_ip(request), response, NotFound.code)
    return response
