"""Failures and key actions are logged as one structured line each, with user-controlled CR/LF escaped."""
import logging
import re

from django.test import Client
from django.urls import reverse

from dashboard.audit import escape_for_log
from dashboard.models import Role
from keys.models import ApiKey

from . import helpers
from .helpers import fresh_code


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


def refusal_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "sandbox.api"]


def test_a_refusal_repeated_within_a_second_is_one_line_and_the_next_line_counts_the_rest(
    client, clock, key_pair, caplog, monkeypatch
):
    from sandbox import refusal_log

    from .sandbox_support import api, assert_error

    now = [1000.0]
    monkeypatch.setattr(refusal_log, "monotonic", lambda: now[0])
    caplog.set_level(logging.INFO, logger="sandbox.api")
    for _ in range(5):
        assert_error(api(client, pair=key_pair, signature="0" * 128), "bad_header_signature")
        now[0] += 0.1
    assert len(refusal_lines(caplog)) == 1
    assert "code=bad_header_signature" in refusal_lines(caplog)[0] and "repeats_not_logged" not in refusal_lines(caplog)[0]

    now[0] += 1.0
    assert_error(api(client, pair=key_pair, signature="0" * 128), "bad_header_signature")

    assert len(refusal_lines(caplog)) == 2
    assert refusal_lines(caplog)[1].endswith("repeats_not_logged=4")


def test_refusals_of_another_reason_key_or_address_get_their_own_line(client, clock, key_pair, caplog):
    from .sandbox_support import api, assert_error

    caplog.set_level(logging.INFO, logger="sandbox.api")
    assert_error(api(client, pair=key_pair, signature="0" * 128), "bad_header_signature")
    assert_error(api(client, pair=key_pair, signature="0" * 128, REMOTE_ADDR="198.51.100.99"), "bad_header_signature")
    Client().post("/api/v2/accounts/list", b"{}", content_type="application/json", HTTP_X_PROCESSING_KEY="sbx_" + "0" * 40)
    Client().post("/api/v2/accounts/list", b"{}", content_type="application/json")

    lines = refusal_lines(caplog)
    assert len(lines) == 4
    assert [re.search(r"code=(\w+)", line).group(1) for line in lines] == [
        "bad_header_signature", "bad_header_signature", "bad_header_key", "required_header_key"]
    assert "ip=198.51.100.99" in lines[1]
