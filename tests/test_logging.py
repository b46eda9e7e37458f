"""Failures and key actions are logged as one structured line each, with user-controlled CR/LF escaped."""
import logging

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
