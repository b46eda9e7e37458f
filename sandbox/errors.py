"""Every refusal of the sandbox API: one class each, and one place that turns them into JSON answers."""
from __future__ import annotations

from django.http import JsonResponse


class SandboxError(Exception):
    status = 400
    code = ""
    error = ""

    def extra(self) -> dict:
        return {}

    def response(self) -> JsonResponse:
        return JsonResponse({"error": self.error, "code": self.code, **self.extra()}, status=self.status)


class MissingKey(SandboxError):
    status, code, error = 403, "required_header_key", "No key header"


class BadKey(SandboxError):
    status, code, error = 403, "bad_header_key", "Bad key header"


class MissingSignature(SandboxError):
    status, code, error = 403, "required_header_signature", "No signature header"


class BadSignature(SandboxError):
    status, code, error = 403, "bad_header_signature", "Bad signature header"


class IpNotAllowed(SandboxError):
    status, code, error = 403, "ip_not_allowed", "IP address is not allowed"

    def __init__(self, address: str | None):
        super().__init__(self.error)
        self.address = address

    def extra(self) -> dict:
        # The first thing an integrator behind NAT needs: the address we saw.
        return {"ip": self.address}


class BadContent(SandboxError):
    status, code, error = 400, "bad_content_format", "Bad content format"


class BodyTooLarge(SandboxError):
    status, code, error = 413, "body_too_large", "Request body is larger than 1 MiB"


class NotFound(SandboxError):
    status, code, error = 404, "not_found", "No such API method"


class MethodNotAllowed(SandboxError):
    status, code, error = 405, "method_not_allowed", "Method not allowed"

    def __init__(self, allowed: str):
        super().__init__(self.error)
        self.allowed = allowed

    def response(self) -> JsonResponse:
        response = super().response()
        response["Allow"] = self.allowed
        return response


class Unavailable(SandboxError):
    status, code, error = 503, "service_unavailable", "Service temporarily unavailable"
