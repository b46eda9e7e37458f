"""Dates in the dashboard are shown in the time zone each user chooses."""
from django.test import Client
from django.urls import reverse

from dashboard.models import AuditAction, AuditEvent


def test_dates_follow_the_users_time_zone(owner_client, owner, merchant, clock):
    AuditEvent.objects.create(merchant=merchant, actor=owner, action=AuditAction.KEY_RENAMED)
    activity = reverse("dashboard:activity", args=[merchant.slug])
    assert "2026-11-27 12:00:00" in owner_client.get(activity).content.decode()

    response = owner_client.post(reverse("dashboard:time-zone"), {"time_zone": "Asia/Tokyo"})

    assert response.status_code == 302
    owner.refresh_from_db()
    assert owner.time_zone == "Asia/Tokyo"
    page = owner_client.get(activity).content.decode()
    assert "2026-11-27 21:00:00" in page and "JST" in page


def test_an_unknown_time_zone_is_refused_next_to_the_field(owner_client, owner):
    response = owner_client.post(reverse("dashboard:time-zone"), {"time_zone": "Mars/Olympus_Mons"})
    assert response.status_code == 200
    assert "Choose a time zone from the list." in response.content.decode()
    owner.refresh_from_db()
    assert owner.time_zone == "UTC"


def test_choosing_a_time_zone_needs_a_verified_session_and_a_post(owner_client, owner):
    anonymous = Client().post(reverse("dashboard:time-zone"), {"time_zone": "Asia/Tokyo"})
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("dashboard:sign-in"))
    assert owner_client.get(reverse("dashboard:time-zone")).status_code == 405
    owner.refresh_from_db()
    assert owner.time_zone == "UTC"
