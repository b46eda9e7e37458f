"""The request log: what an integrator sees of their sandbox requests, and what is never written down.

Rows for accepted and refused requests (key, address, method, path, status, error code), never the body, the
signature or the secret; the "API requests" page for Owners, filterable by key and outcome, showing only the
merchant's own requests; and the log kept at the newest 1,000 requests per merchant.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models import Max, Min
from django.urls import reverse
from django.utils import timezone

from dashboard.models import Role
from keys import crypto
from keys.models import ApiKey
from sandbox import request_log
from sandbox.models import REQUEST_LOG_SIZE, ApiRequest

from . import helpers
from .sandbox_support import (
    ALLOWED_IP, OTHER_IP, UNKNOWN_KEY, activate_new_key, api, assert_accepted, assert_error, deactivate,
)

SECRET_BODY = b'{"marker":"body-must-never-be-stored-7c1e"}'


def log_url(merchant, **query) -> str:
    url = reverse("integration:request-log", kwargs={"merchant_slug": merchant.slug})
    return url + ("?" + "&".join(f"{name}={value}" for name, value in query.items()) if query else "")


def rows(merchant) -> list[dict]:
    return list(
        ApiRequest.objects.for_merchant(merchant).order_by("id")
        .values("api_key_id", "ip_address", "method", "path", "status", "error_code", "created_at")
    )


def make_rows(merchant, key, count: int, *, status: int = 200, error_code: str = "") -> None:
    ApiRequest.objects.bulk_create(
        ApiRequest(
            merchant=merchant, api_key=key, ip_address=ALLOWED_IP, method="POST", path="/api/v2/accounts/list",
            status=status, error_code=error_code,
        )
        for _ in range(count)
    )


# What is written


def test_accepted_and_refused_requests_are_logged_with_what_explains_them(client, clock, fenced_pair, merchant):
    now = timezone.now()
    key_id = fenced_pair.key.pk
    assert_accepted(api(client, pair=fenced_pair, REMOTE_ADDR=ALLOWED_IP))
    assert_accepted(api(client, "currencies/list", pair=fenced_pair, REMOTE_ADDR=ALLOWED_IP))
    assert_error(api(client, pair=fenced_pair, signature="0" * 128, REMOTE_ADDR=ALLOWED_IP), "bad_header_signature")
    assert_error(api(client, pair=fenced_pair, signature=None, REMOTE_ADDR=ALLOWED_IP), "required_header_signature")
    assert_error(api(client, pair=fenced_pair, REMOTE_ADDR=OTHER_IP), "ip_not_allowed")
    assert_error(api(client, pair=fenced_pair, body=b"{", REMOTE_ADDR="2001:db8::5"), "ip_not_allowed")
    assert_error(api(client, pair=fenced_pair, body=b"{", REMOTE_ADDR=ALLOWED_IP), "bad_content_format")

    def row(status, error_code="", ip=ALLOWED_IP, path="/api/v2/accounts/list"):
        return {"api_key_id": key_id, "ip_address": ip, "method": "POST", "path": path, "status": status,
                "error_code": error_code, "created_at": now}

    assert rows(merchant) == [
        row(200),
        row(200, path="/api/v2/currencies/list"),
        row(403, "bad_header_signature"),
        row(403, "required_header_signature"),
        row(403, "ip_not_allowed", ip=OTHER_IP),
        row(403, "ip_not_allowed", ip="2001:db8::5"),
        row(400, "bad_content_format"),
    ]


def test_requests_of_a_key_that_is_not_active_are_logged_for_its_merchant(client, clock, owner, merchant, key_pair):
    deactivate(clock, owner, merchant, key_pair)

    assert_error(api(client, pair=key_pair), "bad_header_key")

    assert [(row["api_key_id"], row["status"], row["error_code"]) for row in rows(merchant)] == [
        (key_pair.key.pk, 403, "bad_header_key")
    ]


@pytest.mark.parametrize("key", [None, UNKNOWN_KEY, "garbage"])
def test_requests_naming_no_known_key_belong_to_no_merchant_and_are_not_logged(client, clock, key_pair, key):
    api(client, pair=key_pair, key=key)

    assert not ApiRequest.objects.exists()


def test_an_oversized_body_is_refused_before_the_key_is_looked_up_so_it_is_not_logged(client, clock, key_pair):
    assert_error(api(client, pair=key_pair, body=b" " * (1024 * 1024 + 1)), "body_too_large")

    assert not ApiRequest.objects.exists()


def test_a_wrong_method_or_path_with_a_known_key_is_logged_for_its_merchant(client, clock, key_pair, merchant):
    assert_error(api(client, pair=key_pair, method="GET"), "method_not_allowed")
    assert_error(api(client, "account/list", pair=key_pair), "not_found")  # a typo in the path
    assert_error(api(client, "account/list", key=UNKNOWN_KEY, secret="s"), "not_found")  # no key: nothing to log

    assert list(ApiRequest.objects.for_merchant(merchant).order_by("id").values_list(
        "method", "path", "status", "error_code", "api_key_id")) == [
        ("GET", "/api/v2/accounts/list", 405, "method_not_allowed", key_pair.key.pk),
        ("POST", "/api/v2/account/list", 404, "not_found", key_pair.key.pk),
    ]
    assert ApiRequest.objects.count() == 2


def test_log_never_holds_the_body_the_signature_or_the_secret(client, clock, key_pair, merchant):
    signature = crypto.sign(key_pair.secret, SECRET_BODY)
    assert_accepted(api(client, pair=key_pair, body=SECRET_BODY))
    assert_error(api(client, pair=key_pair, body=SECRET_BODY, signature=signature.upper()), "bad_header_signature")
    assert_error(
        api(client, pair=key_pair, body=SECRET_BODY, content_type="text/plain"), "bad_content_format"
    )

    stored = [str(value) for row in ApiRequest.objects.values() for value in row.values()]
    assert len(stored) >= 3 * 9
    for value in stored:
        assert "body-must-never-be-stored" not in value
        assert signature not in value.lower()
        assert signature[:16] not in value.lower()
        assert key_pair.secret not in value


def test_long_paths_and_methods_are_cut_to_fit(client, clock, key_pair, merchant):
    api(client, "x" * 500, pair=key_pair)  # an unknown path, logged for the key's merchant
    assert len(ApiRequest.objects.get().path) == 200
    ApiRequest.objects.all().delete()

    request_log.record_request(
        key=key_pair.key, at=timezone.now(), client_ip=None, method="PROPFIND-LONG-METHOD",
        path="/api/v2/" + "y" * 500, status=405, error_code="method_not_allowed",
    )

    entry = ApiRequest.objects.get()
    assert (len(entry.method), len(entry.path), entry.ip_address) == (10, 200, None)


# The page


def test_owner_sees_the_log_newest_first(client, clock, owner, merchant, fenced_pair):
    assert_accepted(api(client, pair=fenced_pair, REMOTE_ADDR=ALLOWED_IP))
    clock.advance(5)
    assert_error(api(client, pair=fenced_pair, REMOTE_ADDR=OTHER_IP), "ip_not_allowed")
    helpers.sign_in_verified(client, owner)

    response = client.get(log_url(merchant))

    assert response.status_code == 200
    assert [(entry.status, entry.error_code) for entry in response.context["entries"]] == [
        (403, "ip_not_allowed"), (200, ""),
    ]
    page = response.content.decode()
    assert fenced_pair.public_key in page and OTHER_IP in page and "ip_not_allowed" in page
    assert page.index(OTHER_IP) < page.index(f">{ALLOWED_IP}<")
    assert fenced_pair.secret not in page


def test_log_filters_by_key_and_outcome(client, clock, owner, merchant):
    old = activate_new_key(clock, owner, merchant, name="old")
    assert_accepted(api(client, pair=old))
    assert_error(api(client, pair=old, signature="0" * 128), "bad_header_signature")
    deactivate(clock, owner, merchant, old)
    new = activate_new_key(clock, owner, merchant, name="new")
    assert_accepted(api(client, pair=new))
    assert_error(api(client, pair=old), "bad_header_key")
    assert_error(api(client, pair=new, body=b"nope"), "bad_content_format")
    helpers.sign_in_verified(client, owner)

    def shown(**query):
        response = client.get(log_url(merchant, **query))
        assert response.status_code == 200
        return [(entry.api_key.name, entry.status, entry.error_code) for entry in response.context["entries"]]

    assert shown() == [
        ("new", 400, "bad_content_format"), ("old", 403, "bad_header_key"), ("new", 200, ""),
        ("old", 403, "bad_header_signature"), ("old", 200, ""),
    ]
    assert shown(key=old.key.pk) == [
        ("old", 403, "bad_header_key"), ("old", 403, "bad_header_signature"), ("old", 200, ""),
    ]
    assert shown(key=new.key.pk) == [("new", 400, "bad_content_format"), ("new", 200, "")]
    assert shown(outcome="accepted") == [("new", 200, ""), ("old", 200, "")]
    assert shown(outcome="refused") == [
        ("new", 400, "bad_content_format"), ("old", 403, "bad_header_key"), ("old", 403, "bad_header_signature"),
    ]
    assert shown(key=old.key.pk, outcome="refused") == [
        ("old", 403, "bad_header_key"), ("old", 403, "bad_header_signature"),
    ]
    assert shown(key=new.key.pk, outcome="accepted") == [("new", 200, "")]


def test_other_merchants_requests_are_never_shown(client, clock, owner, merchant, key_pair):
    other = helpers.create_merchant()
    other_owner = helpers.create_member(other, Role.OWNER)
    other_pair = activate_new_key(clock, other_owner, other)
    assert_accepted(api(client, pair=other_pair, REMOTE_ADDR="192.0.2.77"))
    assert_accepted(api(client, pair=key_pair))
    helpers.sign_in_verified(client, owner)

    for query in ({}, {"key": other_pair.key.pk}, {"key": other_pair.key.pk, "outcome": "accepted"}):
        response = client.get(log_url(merchant, **query))
        assert response.status_code == 200
        assert {entry.merchant_id for entry in response.context["entries"]} == {merchant.pk}
        page = response.content.decode()
        assert other_pair.public_key not in page and "192.0.2.77" not in page
    # Another merchant's page is not found at all, for someone who is not its member.
    assert client.get(log_url(other)).status_code == 404


def test_members_who_are_not_owners_are_refused(client, clock, merchant, key_pair):
    assert_accepted(api(client, pair=key_pair))
    for role in (Role.VIEW, Role.EXCHANGE, Role.LIMITS, Role.RESTRICTED):
        helpers.sign_in_verified(client, helpers.create_member(merchant, role))

        response = client.get(log_url(merchant))

        assert response.status_code == 403, role
        assert key_pair.public_key.encode() not in response.content


@pytest.mark.django_db
def test_anonymous_visitor_is_sent_to_sign_in(client, merchant):
    response = client.get(log_url(merchant))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("dashboard:sign-in"))


def test_page_shows_at_most_the_log_size_in_pages_of_fifty(client, clock, owner, merchant, key_pair):
    make_rows(merchant, key_pair.key, REQUEST_LOG_SIZE + 20)
    helpers.sign_in_verified(client, owner)

    first = client.get(log_url(merchant))
    last = client.get(log_url(merchant, page=REQUEST_LOG_SIZE // 50))

    assert len(first.context["entries"]) == 50
    assert first.context["page"].paginator.count == REQUEST_LOG_SIZE
    assert len(last.context["entries"]) == 50
    assert not last.context["page"].has_next()
    assert client.get(log_url(merchant, page="nonsense")).status_code == 200


def test_page_zero_of_the_request_log_shows_its_newest_requests(client, clock, owner, merchant, key_pair):
    make_rows(merchant, key_pair.key, 120)
    helpers.sign_in_verified(client, owner)

    first = client.get(log_url(merchant)).context["page"]
    for requested in ("0", "-1"):
        page = client.get(log_url(merchant, page=requested)).context["page"]
        assert page.number == 1
        assert list(page.object_list) == list(first.object_list)



# Pruning


def test_prune_keeps_the_newest_thousand_of_the_merchant(clock, merchant, key_pair):
    make_rows(merchant, key_pair.key, 1_050)
    other = helpers.create_merchant()
    make_rows(other, None, 30)
    newest = list(ApiRequest.objects.for_merchant(merchant).order_by("-id").values_list("id", flat=True)[:1000])

    deleted = request_log.prune(merchant.pk)

    assert deleted == 50
    assert sorted(ApiRequest.objects.for_merchant(merchant).values_list("id", flat=True)) == sorted(newest)
    assert ApiRequest.objects.for_merchant(other).count() == 30
    # Nothing more to do the second time.
    assert request_log.prune(merchant.pk) == 0


def test_trim_after_trim_keeps_the_newest_thousand(clock, merchant, key_pair):
    make_rows(merchant, key_pair.key, REQUEST_LOG_SIZE)
    for _ in range(5):
        make_rows(merchant, key_pair.key, 120)
        newest = set(ApiRequest.objects.for_merchant(merchant).order_by("-id").values_list("id", flat=True)[:1000])

        assert request_log.prune(merchant.pk) == 120

        assert set(ApiRequest.objects.for_merchant(merchant).values_list("id", flat=True)) == newest


def late_row(merchant, key, row_id: int) -> None:
    """A row committed after a trim with an id from before it, as another worker's batch in flight can be."""
    ApiRequest.objects.create(id=row_id, merchant=merchant, api_key=key, method="POST", path="/api/v2/accounts/list",
                              status=200)


def test_a_trim_reaches_back_to_the_cutoff_two_trims_before_and_no_further(clock, merchant, key_pair):
    make_rows(merchant, key_pair.key, REQUEST_LOG_SIZE + 50)
    request_log.prune(merchant.pk)
    first_cutoff = ApiRequest.objects.for_merchant(merchant).aggregate(oldest=Min("id"))["oldest"]
    make_rows(merchant, key_pair.key, 50)
    request_log.prune(merchant.pk)  # deletes the row at first_cutoff and the 49 after it
    late_row(merchant, key_pair.key, first_cutoff)
    late_row(merchant, key_pair.key, first_cutoff - 1)
    make_rows(merchant, key_pair.key, 50)

    request_log.prune(merchant.pk)

    # The late row the third trim reaches is gone; one older than the first trim's cutoff is left: that is what
    # keeps a trim's cost flat as the log turns over (on PostgreSQL, every row deleted before it leaves an index
    # entry until VACUUM, which a trim reading from the merchant's first id went through each time).
    remaining = set(ApiRequest.objects.for_merchant(merchant).values_list("id", flat=True))
    assert first_cutoff not in remaining
    assert first_cutoff - 1 in remaining
    assert len(remaining) == REQUEST_LOG_SIZE + 1


def test_prune_leaves_a_short_log_alone(clock, merchant, key_pair):
    make_rows(merchant, key_pair.key, 10)

    assert request_log.prune(merchant.pk) == 0
    assert ApiRequest.objects.for_merchant(merchant).count() == 10


def test_every_hundredth_insert_prunes_the_merchants_log(client, clock, merchant, key_pair):
    make_rows(merchant, key_pair.key, 1_050)
    for _ in range(request_log.PRUNE_EVERY - 1):
        request_log.record_request(
            key=key_pair.key, at=timezone.now(), client_ip=ALLOWED_IP, method="POST", path="/api/v2/accounts/list",
            status=200, error_code="",
        )
    assert ApiRequest.objects.for_merchant(merchant).count() == 1_050 + request_log.PRUNE_EVERY - 1

    assert_accepted(api(client, pair=key_pair))  # the merchant's hundredth insert

    assert ApiRequest.objects.for_merchant(merchant).count() == REQUEST_LOG_SIZE
    assert ApiRequest.objects.for_merchant(merchant).order_by("-id").first().created_at == timezone.now()


def test_each_merchants_log_stays_near_its_size_when_traffic_interleaves(clock, merchant, key_pair):
    other = helpers.create_merchant()
    other_key = ApiKey.objects.create(merchant=other, public_key=crypto.generate_public_key())
    make_rows(merchant, key_pair.key, REQUEST_LOG_SIZE)
    if ApiRequest.objects.aggregate(last=Max("id"))["last"] % 2:
        make_rows(other, other_key, 1)

    # Two busy integrations taking turns: ours always lands on odd ids, theirs on even ones.
    for _ in range(2 * request_log.PRUNE_EVERY):
        for key in (key_pair.key, other_key):
            request_log.record_request(
                key=key, at=timezone.now(), client_ip=ALLOWED_IP, method="POST", path="/api/v2/accounts/list",
                status=200, error_code="",
            )

    assert ApiRequest.objects.for_merchant(merchant).count() <= REQUEST_LOG_SIZE + request_log.PRUNE_EVERY


def test_log_rows_keep_their_time(client, clock, key_pair, merchant):
    assert_accepted(api(client, pair=key_pair))
    clock.advance(90)
    assert_accepted(api(client, pair=key_pair))

    first, second = ApiRequest.objects.for_merchant(merchant).order_by("id")
    assert second.created_at - first.created_at == timedelta(seconds=90)


def test_key_filter_names_each_key_with_its_status(client, clock, owner, merchant):
    old = activate_new_key(clock, owner, merchant, name="old checkout")
    deactivate(clock, owner, merchant, old)
    new = activate_new_key(clock, owner, merchant)  # no name: its public key alone, as on the API keys tab
    helpers.sign_in_verified(client, owner)

    choices = client.get(log_url(merchant)).context["form"].fields["key"].choices

    assert choices == [
        ("", "All keys"),
        (str(new.key.pk), f"{new.key.public_key} · active"),
        (str(old.key.pk), f"old checkout ({old.key.public_key}) · deactivated"),
    ]

def test_page_links_keep_the_filters(owner_client, merchant, key_pair):
    make_rows(merchant, key_pair.key, 60)
    url = reverse("integration:request-log", args=[merchant.slug])
    page = owner_client.get(url, {"outcome": "accepted"}).content.decode()
    assert "Page 1 of 2" in page
    assert "?outcome=accepted&amp;page=2" in page


def test_a_deleted_keys_requests_stay_in_the_log_without_their_key(client, clock, merchant, key_pair):
    assert_accepted(api(client, pair=key_pair))
    assert_error(api(client, pair=key_pair, signature="0" * 128), "bad_header_signature")

    key_pair.key.delete()

    assert list(ApiRequest.objects.for_merchant(merchant).order_by("id").values_list("status", "api_key_id")) == [
        (200, None), (403, None)]
