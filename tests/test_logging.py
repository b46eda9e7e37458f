"""Failures and key actions are logged as one structured line each, with user-controlled CR/LF escaped."""
import logging
import re

from django.test import Client
from django.urls import reverse

from dashboard.audit import escape_for_log
from dashboard.models import Role

from . import helpers


def test_cr_and_lf_in_user_controlled_text_cannot_start_a_new_log_line():
    assert escape_for_log("evil\r\nINFO fake line") == "evil\\r\\nINFO fake line"
    assert escape_for_log("back\\slash") == "back\\\\slash"


def signed_in(user) -> Client:
    browser = Client()
    helpers.sign_in_verified(browser, user)
    return browser


def test_each_kind_of_failure_is_logged_by_its_apps_logger(owner_client, merchant, caplog, clock):
    caplog.set_level(logging.INFO)
    signed_in(helpers.create_member(merchant, Role.VIEW)).get(reverse("keys:list", args=[merchant.slug]))
    owner_client.post(reverse("keys:generate", args=[merchant.slug]), {"code": "000000"})
    Client().post("/api/v2/accounts/list", b"{}", content_type="application/json", HTTP_X_PROCESSING_KEY="sbx_" + "0" * 40)
    by_logger = {record.name: record.getMessage() for record in caplog.records}
    assert "reason=role" in by_logger["dashboard.access"]
    assert "action=otp_failed" in by_logger["dashboard.audit"]
    assert "code=bad_header_key" in by_logger["sandbox.api"]


def test_every_key_action_and_every_sign_in_failure_is_one_audit_line(owner, owner_client, merchant, caplog, clock):
    from keys.models import ApiKey

    from .sandbox_support import fresh_code

    caplog.set_level(logging.INFO, logger="dashboard.audit")
    Client().post(reverse("dashboard:sign-in"), {"email": owner.email, "password": "not the password at all"})
    Client().post(reverse("dashboard:sign-in"), {"email": "nobody@acme.test", "password": "not the password at all"})
    slug = merchant.slug
    owner_client.post(reverse("keys:generate", args=[slug]), {"name": "Logged\r\nINFO forged line", "code": fresh_code(clock, owner)})
    owner_client.post(reverse("keys:generate", args=[slug]), {"name": "Logged", "code": fresh_code(clock, owner)})
    key = ApiKey.objects.get()
    for action, data in [("keys:activate", {"allowlist": ""}), ("keys:allowlist", {"allowlist": "127.0.0.1"}),
                         ("keys:deactivate", {}), ("keys:rename", {"name": "Renamed"}), ("keys:archive", {})]:
        owner_client.post(reverse(action, args=[slug, key.pk]), {**data, "code": fresh_code(clock, owner)})

    lines = [record.getMessage() for record in caplog.records if record.name == "dashboard.audit"]
    actions = [re.search(r"action=(\S+) outcome=(\S+)", line).groups() for line in lines]
    assert ("sign_in_failed", "refused") in actions and actions.count(("sign_in_failed", "refused")) == 2
    for action in ("key_generated", "key_activated", "key_allowlist_changed", "key_deactivated", "key_renamed",
                   "key_archived"):
        assert (action, "succeeded") in actions, action
    assert all("\n" not in line and "\r" not in line for line in lines)
