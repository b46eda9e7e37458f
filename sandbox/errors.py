"""Every refusal of the sandbox API: one class each, and one place that turns them into JSON answers."""
from __future__ import annotations

import functools
import json

from django.http import HttpResponse


class SandboxError(Exception):
    status = 400
    code = ""
    error = ""

    def response(self) -> HttpResponse:
        response = HttpResponse(_content_of(type(self)), status=self.status, content_type="application/json")
        # The API logs each refusal itself (sandbox.refusal_log, and its 503s where they arise); marked as written,
        # Django's own line (off in LOGGING for a 4xx) is not built either (django.utils.log.log_response).
        response._has_been_logged = True
        return response


@functools.cache
def _content_of(error_class: type[SandboxError]) -> bytes:
    # The same bytes for every refusal of a kind: encoded once, a refusal costs no more than an acceptance.
    return json.dumps({"error": error_class.error, "code": error_class.code}).encode()


class MissingKey(SandboxError):
    status, code, error = 403, "required_header_key", "No key header"


class BadKey(SandboxError):
    status, code, error = 403, "bad_header_key", "Bad key header"


class MissingSignature(SandboxError):
    status, code, error = 403, "required_header_signature", "No signature header"


class BadSignature(SandboxError):
    status, code, error = 403, "bad_header_signature", "Bad signature header"


class IpNotAllowed(SandboxError):
    # Exactly the platform's body: the address it saw is on the "API requests" tab, in the refusal's row.
    status, code, error = 403, "ip_not_allowed", "IP address is not allowed"


class BadContent(SandboxError):
    status, code, error = 400, "bad_content_format", "Bad content format"


class BodyTooLarge(SandboxError):
    status, code, error = 413, "body_too_large", "Request body is larger than 1 MiB"


class LengthRequired(SandboxError):
    status, code, error = 411, "length_required", "Send the body with a Content-Length header"


class NotFound(SandboxError):
    status, code, error = 404, "not_found", "No such API method"


class MethodNotAllowed(SandboxError):
    status, code, error = 405, "method_not_allowed", "Method not allowed"

    def __init__(self, allowed: str):
        super().__init__(self.error)
        self.allowed = allowed

    def response(self) -> HttpResponse:
        response = super().response()
        response["Allow"] = self.allowed
        return response


class Unavailable(SandboxError):
    status, code, error = 503, "service_unavailable", "Service temporarily unavailable"
