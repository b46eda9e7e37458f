"""The Owner's pages run a fixed number of queries however many keys or events the merchant has."""
from __future__ import annotations

import pytest
from django.urls import reverse

from dashboard.models import AuditAction, AuditEvent
from keys.models import ApiKey, KeyStatus

MAX_PAGE_QUERIES = 10


def add_keys(merchant, owner, count: int) -> None:
    ApiKey.objects.bulk_create(
        ApiKey(merchant=merchant, public_key=f"sbx_{n:040x}", name=f"key {n}", created_by=owner,
               activated_by=owner, status=KeyStatus.GENERATED)
        for n in range(count)
    )


def add_events(merchant, owner, count: int) -> None:
    AuditEvent.objects.bulk_create(
        AuditEvent(merchant=merchant, actor=owner, actor_email=owner.email, action=AuditAction.KEY_RENAMED,
                   target=f"api_key:sbx_{n:040x}", ip_address="198.51.100.7")
        for n in range(count)
    )


def count_queries(client, url, django_assert_max_num_queries) -> None:
    client.get(url)  # a first request settles one-off writes (remembering the merchant)
    with django_assert_max_num_queries(MAX_PAGE_QUERIES):
        response = client.get(url)
    assert response.status_code == 200


@pytest.mark.parametrize("rows", [1, 200])
def test_the_api_keys_page_runs_a_fixed_number_of_queries(owner_client, owner, merchant, rows,
                                                         django_assert_max_num_queries):
    add_keys(merchant, owner, rows)
    count_queries(owner_client, reverse("keys:list", args=[merchant.slug]), django_assert_max_num_queries)


@pytest.mark.parametrize("rows", [1, 200])
def test_the_activity_page_runs_a_fixed_number_of_queries(owner_client, owner, merchant, rows,
                                                         django_assert_max_num_queries):
    add_events(merchant, owner, rows)
    count_queries(owner_client, reverse("dashboard:activity", args=[merchant.slug]), django_assert_max_num_queries)


def test_an_older_activity_page_runs_the_same_fixed_number_of_queries(owner_client, owner, merchant,
                                                                     django_assert_max_num_queries):
    add_events(merchant, owner, 200)
    middle = AuditEvent.objects.order_by("id")[100].pk
    count_queries(owner_client, reverse("dashboard:activity", args=[merchant.slug]) + f"?before={middle}",
                  django_assert_max_num_queries)


def test_both_pages_paginate(owner_client, owner, merchant):
    add_keys(merchant, owner, 60)
    add_events(merchant, owner, 60)
    keys_page = owner_client.get(reverse("keys:list", args=[merchant.slug])).content.decode()
    activity_page = owner_client.get(reverse("dashboard:activity", args=[merchant.slug])).content.decode()
    assert "Page 1 of 2" in keys_page
    # The audit trail only grows: its pages link to older and newer entries rather than count them all.
    assert 'href="?before=' in activity_page and activity_page.count('class="badge badge-succeeded"') == 50
    assert keys_page.count("sbx_") < 60 * 2
