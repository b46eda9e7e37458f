"""The Content-Security-Policy headers: ours, built once per settings change, are django-csp's, whatever the
response, the request and the settings."""
import pytest
from csp.constants import NONCE
from csp.decorators import csp, csp_exempt, csp_replace, csp_update
from csp.exceptions import CSPNonceError
from csp.middleware import CSPMiddleware
from django.http import HttpResponse, HttpResponseNotFound, HttpResponseServerError
from django.test import RequestFactory

from dashboard.middleware import ContentSecurityPolicyMiddleware

POLICY_HEADERS = ("Content-Security-Policy", "Content-Security-Policy-Report-Only")
REPORT_ONLY = {"DIRECTIVES": {"default-src": ["'self'"], "report-uri": "/csp-reports/"}}
WITH_NONCES = {"DIRECTIVES": {"default-src": ["'self'"], "script-src": ["'self'", NONCE]}}


def plain(request):
    return HttpResponse("ok")


def drawing_a_nonce(request):
    return HttpResponse(f"<script nonce='{request.csp_nonce}'></script>")


def with_its_own_header(request):
    response = HttpResponse("ok")
    response["Content-Security-Policy"] = "default-src 'none'"
    return response


def not_found(request):
    return HttpResponseNotFound("no")


def failed(request):
    return HttpResponseServerError("no")


VIEWS = [
    pytest.param(plain, id="plain"),
    pytest.param(drawing_a_nonce, id="drawing-a-nonce"),
    pytest.param(with_its_own_header, id="with-its-own-header"),
    pytest.param(not_found, id="404"),
    pytest.param(failed, id="500"),
    pytest.param(csp_exempt()(plain), id="csp_exempt"),
    pytest.param(csp_exempt(REPORT_ONLY=True)(plain), id="csp_exempt-report-only"),
    pytest.param(csp_update({"img-src": ["https://images.example"]})(plain), id="csp_update"),
    pytest.param(csp_update({"img-src": ["https://images.example"]}, REPORT_ONLY=True)(plain),
                 id="csp_update-report-only"),
    pytest.param(csp_replace({"script-src": ["'self'", "https://scripts.example"]})(plain), id="csp_replace"),
    pytest.param(csp_replace({"script-src": ["'none'"]}, REPORT_ONLY=True)(plain), id="csp_replace-report-only"),
    pytest.param(csp({"default-src": ["'none'"]})(plain), id="csp"),
    pytest.param(csp({"default-src": ["'none'"]}, REPORT_ONLY=True)(plain), id="csp-report-only"),
]


def headers_from(middleware_class, view, path="/m/acme/keys/"):
    request = RequestFactory().get(path)
    response = middleware_class(view)(request)
    return {header: response.get(header) for header in POLICY_HEADERS}, request


def the_nonce_in(headers: dict) -> str | None:
    policy = headers["Content-Security-Policy"] or ""
    return policy.split("'nonce-", 1)[1].split("'", 1)[0] if "'nonce-" in policy else None


@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
@pytest.mark.parametrize("report_only", [False, True], ids=["enforced", "enforced-and-report-only"])
@pytest.mark.parametrize("nonces", [False, True], ids=["ours", "with-nonces"])
@pytest.mark.parametrize("view", VIEWS)
def test_every_response_gets_the_headers_django_csp_gives_it(settings, view, nonces, report_only, debug):
    settings.DEBUG = debug
    if nonces:
        settings.CONTENT_SECURITY_POLICY = WITH_NONCES
    if report_only:
        settings.CONTENT_SECURITY_POLICY_REPORT_ONLY = REPORT_ONLY
    ours, _ = headers_from(ContentSecurityPolicyMiddleware, view)
    theirs, _ = headers_from(CSPMiddleware, view)
    if view is drawing_a_nonce and nonces:
        # A nonce is new on every request: the same policy apart from it.
        assert the_nonce_in(ours) and the_nonce_in(theirs)
        ours = {name: value and value.replace(the_nonce_in(ours), "N") for name, value in ours.items()}
        theirs = {name: value and value.replace(the_nonce_in(theirs), "N") for name, value in theirs.items()}
    assert ours == theirs


def test_a_plain_page_carries_the_settings_policy_and_the_report_only_one_when_set(settings):
    settings.CONTENT_SECURITY_POLICY_REPORT_ONLY = REPORT_ONLY
    headers, _ = headers_from(ContentSecurityPolicyMiddleware, plain)
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["Content-Security-Policy-Report-Only"] == "default-src 'self'; report-uri /csp-reports/"


def test_a_changed_policy_applies_from_the_next_response(settings):
    before, _ = headers_from(ContentSecurityPolicyMiddleware, plain)
    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"default-src": ["'none'"]}}
    after, _ = headers_from(ContentSecurityPolicyMiddleware, plain)
    assert "script-src 'self'" in before["Content-Security-Policy"]
    assert after["Content-Security-Policy"] == "default-src 'none'"


def test_paths_the_settings_exclude_get_no_policy(settings):
    settings.CONTENT_SECURITY_POLICY = {
        "EXCLUDE_URL_PREFIXES": ["/api/"], "DIRECTIVES": {"default-src": ["'self'"]},
    }
    settings.CONTENT_SECURITY_POLICY_REPORT_ONLY = {
        "EXCLUDE_URL_PREFIXES": ["/m/"], "DIRECTIVES": {"default-src": ["'none'"]},
    }
    on_the_api, _ = headers_from(ContentSecurityPolicyMiddleware, plain, path="/api/v2/ping")
    on_a_page, _ = headers_from(ContentSecurityPolicyMiddleware, plain, path="/m/acme/keys/")
    assert on_the_api == {"Content-Security-Policy": None, "Content-Security-Policy-Report-Only": "default-src 'none'"}
    assert on_a_page == {"Content-Security-Policy": "default-src 'self'", "Content-Security-Policy-Report-Only": None}


def test_a_nonce_drawn_after_the_header_was_written_is_refused():
    _, request = headers_from(ContentSecurityPolicyMiddleware, plain)
    with pytest.raises(CSPNonceError):
        str(request.csp_nonce)


def test_the_api_answers_with_the_settings_policy(client):
    assert client.get("/api/v2/ping")["Content-Security-Policy"] == headers_from(
        CSPMiddleware, plain, path="/api/v2/ping")[0]["Content-Security-Policy"]
