"""Nothing leaked: after a whole lifecycle with a known secret, the secret, the 2FA codes used and the
signatures sent appear nowhere except in the one response that reveals the secret."""
from __future__ import annotations

import io
import logging
import re

import pytest
from django.contrib import admin
from django.core import mail
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from dashboard.models import Role
from keys import crypto
from keys.models import ApiKey

from . import helpers


class Lifecycle:
    """Drives the dashboard and the API like a user would, remembering every sensitive value used."""

    def __init__(self, client, owner, merchant, clock):
        self.client, self.owner, self.merchant, self.clock = client, owner, merchant, clock
        self.codes: list[str] = []
        self.signatures: list[str] = []
        self.reveal = None
        self.secret = None

    def code(self) -> str:
        self.clock.next_code_step()
        code = helpers.current_code(self.owner)
        self.codes.append(code)
        return code

    def post(self, name: str, data: dict, key: ApiKey | None = None):
        args = [self.merchant.slug] + ([key.pk] if key else [])
        return self.client.post(reverse(name, args=args), data)

    def call_api(self, key: ApiKey, secret: str, body: bytes = b'{"currency":"BTC"}'):
        signature = crypto.sign(secret, body)
        self.signatures.append(signature)
        return self.client.generic("POST", "/api/v2/accounts/list", body, content_type="application/json",
                                   HTTP_X_PROCESSING_KEY=key.public_key, HTTP_X_PROCESSING_SIGNATURE=signature)

    def run(self) -> None:
        self.post("keys:generate", {"name": "Checkout", "code": self.code()})
        key = ApiKey.objects.get(merchant=self.merchant)
        self.reveal = self.post("keys:activate", {"allowlist": "127.0.0.1, 203.0.113.0/24", "code": self.code()}, key)
        self.secret = re.search(r'id="secret-key"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*id="secret-key"',
                                self.reveal.content.decode())
        self.secret = next(group for group in self.secret.groups() if group)
        assert self.call_api(key, self.secret).status_code == 200
        assert self.call_api(key, self.secret + "x").status_code == 403
        self.post("keys:allowlist", {"allowlist": "127.0.0.1", "code": self.code()}, key)
        self.post("keys:deactivate", {"code": self.code()}, key)
        assert self.call_api(key, self.secret).status_code == 403
        self.post("keys:activate", {"allowlist": "", "code": self.code()}, key)
        self.post("keys:deactivate", {"code": self.code()}, key)
        self.post("keys:archive", {"code": self.code()}, key)
        self.client.post(reverse("dashboard:backup-codes"), {"code": self.code()})

    def needles(self) -> dict[str, re.Pattern]:
        found = {"secret": re.compile(re.escape(self.secret))}
        for code in self.codes:
            # A code is six digits; only a whole number equal to it counts, not digits inside a longer one.
            found[f"code {code}"] = re.compile(rf"(?<![0-9A-Za-z]){code}(?![0-9A-Za-z])")
        for signature in self.signatures:
            found["signature"] = re.compile(re.escape(signature))
        return found


def dashboard_pages(merchant, key) -> list[str]:
    slug = merchant.slug
    pages = [reverse(name, args=[slug]) for name in (
        "dashboard:overview", "dashboard:activity", "dashboard:support", "keys:list", "keys:archived",
        "keys:generate-form", "integration:request-log", "integration:signature-check")]
    pages += [reverse(name, args=[slug, key.pk]) for name in (
        "keys:activate-form", "keys:deactivate-form", "keys:allowlist-form", "keys:rename-form", "keys:archive-form")]
    return pages + [reverse("dashboard:account-security")]


def admin_pages() -> list[str]:
    pages = ["/admin/"]
    for model in admin.site._registry:
        opts = model._meta
        pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        for pk in model._default_manager.values_list("pk", flat=True)[:5]:
            pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk]))
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


def test_the_secret_codes_and_signatures_appear_only_in_the_reveal(lifecycle, owner, merchant, caplog):
    needles = lifecycle.needles()
    assert needles["secret"].search(lifecycle.reveal.content.decode())
    key = ApiKey.objects.get(merchant=merchant)

    for page in dashboard_pages(merchant, key):
        response = lifecycle.client.get(page)
        assert response.status_code == 200, page
        assert_absent(response.content.decode(), needles, page)

    client = Client()
    helpers.sign_in_verified(client, helpers.create_user(staff=True))
    for page in admin_pages():
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
