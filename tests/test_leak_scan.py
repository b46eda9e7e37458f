"""Nothing leaked: after a whole lifecycle with a known secret, the secret, the 2FA codes used and the
signatures sent appear nowhere except in the one response that reveals the secret."""
from __future__ import annotations

import io
import logging
import re
from html import escape

import pytest
from django.contrib import admin
from django.core import mail
from django.core.management import call_command
from django.db import connection
from django.test import Client, RequestFactory
from django.urls import reverse

from dashboard import views as dashboard_views
from dashboard.models import AuditEvent, Role
from keys import crypto
from keys.models import ApiKey

from . import helpers

CHECKED_BODY = '{"currency":"ETH"}'


class Lifecycle:
    """Drives the dashboard and the API like a user would, remembering every sensitive value used and every
    response the user got back."""

    def __init__(self, client, owner, merchant, clock):
        self.client, self.owner, self.merchant, self.clock = client, owner, merchant, clock
        self.codes: list[str] = []
        self.signatures: list[str] = []
        self.responses: list[tuple[str, object]] = []
        # Responses that show back what the user typed into their form: (where, response, what was typed).
        self.echoes: list[tuple[str, object, str]] = []
        self.reveal = None
        self.secret = None

    def code(self) -> str:
        self.clock.next_code_step()
        code = helpers.current_code(self.owner)
        self.codes.append(code)
        return code

    def sign(self, secret: str, body: bytes) -> str:
        signature = crypto.sign(secret, body)
        self.signatures.append(signature)
        return signature

    def post(self, name: str, data: dict, key: ApiKey | None = None):
        args = [self.merchant.slug] + ([key.pk] if key else [])
        url = reverse(name, args=args)
        response = self.client.post(url, data)
        self.responses.append((f"POST {url}", response))
        return response

    def call_api(self, key: ApiKey, secret: str, body: bytes = b'{"currency":"BTC"}'):
        signature = self.sign(secret, body)
        response = self.client.generic("POST", "/api/v2/accounts/list", body, content_type="application/json",
                                       HTTP_X_PROCESSING_KEY=key.public_key, HTTP_X_PROCESSING_SIGNATURE=signature)
        self.responses.append(("the API", response))
        return response

    def check_signature(self, secret: str) -> object:
        """Paste a body and its signature into the signature checker, as an integrator debugging would."""
        signature = self.sign(secret, CHECKED_BODY.encode())
        url = reverse("integration:signature-check", args=[self.merchant.slug])
        response = self.client.post(url, {"body": CHECKED_BODY, "signature": signature})
        assert response.status_code == 200
        self.echoes.append((f"POST {url}", response, signature))
        return response

    def run(self) -> None:
        self.post("keys:generate", {"name": "Checkout", "code": self.code()})
        key = ApiKey.objects.get(merchant=self.merchant)
        self.reveal = self.post("keys:activate", {"allowlist": "127.0.0.1, 203.0.113.0/24", "code": self.code()}, key)
        self.responses.pop()  # the reveal is the one response allowed to carry the secret
        self.secret = re.search(r'<textarea id="secret-key"[^>]*>([^<]+)</textarea>', self.reveal.content.decode()).group(1)
        assert self.call_api(key, self.secret).status_code == 200
        assert self.call_api(key, self.secret + "x").status_code == 403
        assert b"The signature matches" in self.check_signature(self.secret).content
        assert b"The signature does not match" in self.check_signature(self.secret + "x").content
        self.post("keys:allowlist", {"allowlist": "127.0.0.1", "code": self.code()}, key)
        self.post("keys:deactivate", {"code": self.code()}, key)
        assert self.call_api(key, self.secret, b'{"currency":"LTC"}').status_code == 403
        self.post("keys:activate", {"allowlist": "", "code": self.code()}, key)
        self.post("keys:deactivate", {"code": self.code()}, key)
        self.post("keys:rename", {"name": "Old checkout", "code": self.code()}, key)
        self.post("keys:archive", {"code": self.code()}, key)
        response = self.client.post(reverse("dashboard:backup-codes"), {"code": self.code()})
        self.responses.append(("POST backup codes", response))

    def needles(self) -> dict[str, re.Pattern]:
        found = {"secret": re.compile(re.escape(self.secret))}
        for code in self.codes:
            # A code is six digits; only a whole number equal to it counts, not digits inside a longer one.
            found[f"code {code}"] = re.compile(rf"(?<![0-9A-Za-z]){code}(?![0-9A-Za-z])")
        for number, signature in enumerate(dict.fromkeys(self.signatures), 1):
            found[f"signature {number}"] = re.compile(re.escape(signature))
        return found


def dashboard_pages(merchant, key) -> list[str]:
    slug = merchant.slug
    pages = [reverse(name, args=[slug]) for name in (
        "dashboard:overview", "dashboard:support", "keys:list", "keys:archived",
        "keys:generate-form", "integration:request-log", "integration:signature-check")]
    pages += [reverse(name, args=[slug, key.pk]) for name in (
        "keys:activate-form", "keys:deactivate-form", "keys:allowlist-form", "keys:rename-form", "keys:archive-form")]
    return pages + [reverse("dashboard:account-security")]


def activity_pages(client, merchant) -> list[tuple[str, str]]:
    """Every page of the activity trail, newest first, found by following its Older links."""
    url = reverse("dashboard:activity", args=[merchant.slug])
    pages = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, url
        text = response.content.decode()
        pages.append((url, text))
        older = re.search(r'href="(\?before=[0-9]+)"', text)
        url = reverse("dashboard:activity", args=[merchant.slug]) + older.group(1) if older else None
    return pages


def admin_pages(staff) -> list[str]:
    request = RequestFactory().get("/admin/")
    request.user = staff
    pages = ["/admin/"]
    for model, model_admin in admin.site._registry.items():
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        pages.append(reverse(f"{prefix}_changelist"))
        if model_admin.has_add_permission(request):
            pages.append(reverse(f"{prefix}_add"))
        for pk in model._default_manager.values_list("pk", flat=True):
            pages.append(reverse(f"{prefix}_change", args=[pk]))
            pages.append(reverse(f"{prefix}_history", args=[pk]))
    return pages


def raw_text_of_every_table() -> str:
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                chunks.append(" ".join(bytes(v).decode("latin-1") if isinstance(v, (bytes, memoryview)) else str(v)
                                       for v in row))
    return "\n".join(chunks)


@pytest.fixture
def lifecycle(owner_client, owner, merchant, clock, caplog, django_capture_on_commit_callbacks):
    caplog.set_level(logging.DEBUG)
    run = Lifecycle(owner_client, owner, merchant, clock)
    with django_capture_on_commit_callbacks(execute=True):
        run.run()
    return run


def assert_absent(text: str, needles: dict[str, re.Pattern], where: str) -> None:
    for name, pattern in needles.items():
        assert not pattern.search(text), f"{name} found in {where}"


def test_every_signature_sent_is_a_needle_of_its_own(lifecycle):
    needles = lifecycle.needles()
    # Two API calls with the secret, one with a wrong secret, and one of each pasted into the signature checker.
    assert len(set(lifecycle.signatures)) == len(lifecycle.signatures) == 5
    for signature in lifecycle.signatures:
        assert [name for name, pattern in needles.items() if pattern.fullmatch(signature)] != []
    assert len([name for name in needles if name.startswith("signature")]) == 5


def test_the_secret_codes_and_signatures_appear_only_in_the_reveal(lifecycle, owner, merchant, caplog, monkeypatch):
    needles = lifecycle.needles()
    assert needles["secret"].search(lifecycle.reveal.content.decode())
    key = ApiKey.objects.get(merchant=merchant)

    for where, response in lifecycle.responses:
        assert_absent(response.content.decode(), needles, where)
    for where, response, typed in lifecycle.echoes:
        # The checker's form shows back the signature just pasted into it: that tells the user nothing new.
        assert_absent(response.content.decode().replace(escape(typed), ""), needles, where)

    for page in dashboard_pages(merchant, key):
        response = lifecycle.client.get(page)
        assert response.status_code == 200, page
        assert_absent(response.content.decode(), needles, page)

    action = reverse("keys:activate", args=[merchant.slug, key.pk])
    response = lifecycle.client.get(action)
    assert response.status_code == 405
    assert_absent(response.content.decode(), needles, f"the 405 page of {action}")

    # A small page size spreads the trail over several pages, so following Older links is exercised.
    monkeypatch.setattr(dashboard_views, "ACTIVITY_PAGE_SIZE", 3)
    pages = activity_pages(lifecycle.client, merchant)
    assert len(pages) == -(-AuditEvent.objects.for_merchant(merchant).count() // 3) > 2
    for url, text in pages:
        assert_absent(text, needles, url)

    anonymous = Client()
    response = anonymous.get(reverse("dashboard:sign-in"))
    assert response.status_code == 200
    assert_absent(response.content.decode(), needles, "the sign-in page")

    # The second step of sign-in, for a user with an authenticator and for one who must enrol.
    for user, step in [(owner, "dashboard:sign-in-code"), (helpers.create_user(with_device=False), "dashboard:enrol")]:
        browser = Client()
        response = browser.post(reverse("dashboard:sign-in"), {"email": user.email, "password": helpers.PASSWORD})
        assert response["Location"] == reverse(step)
        response = browser.get(reverse(step))
        assert response.status_code == 200
        assert_absent(response.content.decode(), needles, step)

    client = Client()
    staff = helpers.create_user(staff=True)
    helpers.sign_in_verified(client, staff)
    for page in admin_pages(staff):
        response = client.get(page)
        assert response.status_code == 200, page
        assert_absent(response.content.decode(), needles, page)

    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    assert_absent(dump.getvalue(), needles, "dumpdata")
    assert_absent(raw_text_of_every_table(), needles, "a database column")
    assert_absent("\n".join(caplog.handler.format(r) for r in caplog.records), needles, "the logs")
    assert_absent("\n".join(f"{m.subject}\n{m.body}" for m in mail.outbox), needles, "an email")
    assert len(mail.outbox) >= 4
    assert_absent(str(dict(lifecycle.client.session)), needles, "the session")


def test_a_view_member_sees_nothing_sensitive_either(lifecycle, merchant):
    client = Client()
    helpers.sign_in_verified(client, helpers.create_member(merchant, Role.VIEW))
    for page in (reverse("dashboard:overview", args=[merchant.slug]), reverse("dashboard:support", args=[merchant.slug])):
        assert_absent(client.get(page).content.decode(), lifecycle.needles(), page)
