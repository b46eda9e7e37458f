"""The admin panel: behind the dashboard's two-factor sign-in, staff only; 2FA resets and membership changes audited."""
from decimal import Decimal
from importlib import import_module
from types import SimpleNamespace

import pytest
from django.contrib.admin import site as admin_site
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import Permission
from django.core import mail
from django.db import IntegrityError, connection, models, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from dashboard.admin_site import StaffModelAdminMixin
from dashboard.models import AuditAction, AuditEvent, AuditOutcome, Membership, Merchant, Role, User
from keys import services
from keys.models import ApiKey, KeyStatus
from sandbox.models import Balance, Currency

from . import helpers, sandbox_support

STAFF_IP = "192.0.2.44"


@pytest.fixture
def staff(db):
    return helpers.create_user("staff@platform.test", staff=True)


@pytest.fixture
def staff_client(staff):
    client = Client(REMOTE_ADDR=STAFF_IP, HTTP_USER_AGENT="staff-browser")
    helpers.sign_in_verified(client, staff)
    return client


ADMIN_PAGES = [
    "admin:index",
    "admin:dashboard_user_changelist",
    "admin:dashboard_merchant_changelist",
    "admin:otp_totp_totpdevice_changelist",
    "admin:otp_static_staticdevice_changelist",
    "admin:dashboard_auditevent_changelist",
]


# Who gets in


def test_the_admin_sends_a_visitor_to_the_dashboard_sign_in(client, db):
    for name in ADMIN_PAGES:
        url = reverse(name)

        response = client.get(url, follow=True)

        assert response.request["PATH_INFO"] == reverse("dashboard:sign-in"), name
        assert response.context["next"] == url


def test_staff_sign_in_through_the_dashboard_lands_in_the_admin(client, staff, clock):
    sign_in_page = client.get(reverse("admin:index"), follow=True)
    next_url = sign_in_page.context["next"]

    client.post(reverse("dashboard:sign-in"), {"email": staff.email, "password": helpers.PASSWORD, "next": next_url})
    assert client.get(reverse("admin:index"), follow=True).request["PATH_INFO"] == reverse("dashboard:sign-in")
    response = client.post(reverse("dashboard:sign-in-code"), {"code": helpers.current_code(staff)})

    assert response["Location"] == reverse("admin:index")
    assert client.get(reverse("admin:index")).status_code == 200


def test_the_admin_login_form_does_not_accept_a_password(client, staff):
    response = client.post(
        reverse("admin:login"), {"username": staff.email, "password": helpers.PASSWORD, "next": "/admin/"}
    )

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("dashboard:sign-in"))
    assert SESSION_KEY not in client.session


def test_staff_signed_in_with_a_password_only_is_sent_to_sign_in(client, staff):
    client.force_login(staff)

    response = client.get(reverse("admin:dashboard_user_changelist"), follow=True)

    assert response.request["PATH_INFO"] == reverse("dashboard:sign-in")


def test_a_verified_user_who_is_not_staff_is_refused(owner_client):
    for name in ADMIN_PAGES:
        response = owner_client.get(reverse(name), follow=True)

        assert response.status_code == 403, name
        assert "The admin panel is for platform staff." in response.content.decode()


def test_an_inactive_staff_account_is_not_let_in(client, staff):
    helpers.sign_in_verified(client, staff)
    staff.is_active = False
    staff.save()

    response = client.get(reverse("admin:index"), follow=True)

    assert response.request["PATH_INFO"] == reverse("dashboard:sign-in")


@pytest.mark.parametrize("name", ADMIN_PAGES)
def test_verified_staff_open_the_admin_lists(staff_client, owner, name):
    response = staff_client.get(reverse(name))

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("name", "query"),
    [
        ("admin:dashboard_user_changelist", {"q": "owner@acme"}),
        ("admin:dashboard_user_changelist", {"is_staff__exact": "0"}),
        ("admin:dashboard_merchant_changelist", {"q": "owner@acme.test"}),
        ("admin:dashboard_merchant_changelist", {"o": "2"}),
        ("admin:otp_totp_totpdevice_changelist", {"q": "owner", "confirmed__exact": "1"}),
        ("admin:dashboard_auditevent_changelist", {"q": "198.51.100.1"}),
        ("admin:dashboard_auditevent_changelist", {"action__exact": "sign_in", "outcome__exact": "succeeded"}),
        ("admin:dashboard_auditevent_changelist", {"created_at__year": "2026"}),
    ],
)
def test_staff_search_and_filter_the_lists(staff_client, owner, merchant, clock, name, query):
    AuditEvent.objects.create(
        action=AuditAction.SIGN_IN, actor=owner, actor_email=owner.email, ip_address="198.51.100.1"
    )

    response = staff_client.get(reverse(name), query)

    assert response.status_code == 200
    assert response.context["cl"].result_count >= 1


@pytest.mark.parametrize("name", ADMIN_PAGES)
def test_a_search_with_nul_characters_is_searched_without_them_never_a_500(staff_client, owner, name):
    # PostgreSQL refuses text containing NUL: the search would otherwise reach it as a 500.
    response = staff_client.get(reverse(name), {"q": "owner\x00@acme", "o": "1\x00"})

    assert response.status_code in (200, 302)
    if response.status_code == 200:
        assert "\x00" not in response.content.decode()


def test_the_user_list_shows_who_has_2fa(staff_client, owner):
    helpers.create_user("no-device@acme.test", with_device=False)

    response = staff_client.get(reverse("admin:dashboard_user_changelist"))

    results = {user.email: user.confirmed_devices for user in response.context["cl"].result_list}
    assert results["owner@acme.test"] == 1
    assert results["no-device@acme.test"] == 0


# Authenticators: no key shown; deleting one is a 2FA reset, audited


def test_the_authenticator_page_shows_no_key(staff_client, owner):
    device = helpers.totp_device(owner)

    response = staff_client.get(reverse("admin:otp_totp_totpdevice_change", args=[device.pk]))

    html = response.content.decode()
    assert response.status_code == 200
    assert "key" not in response.context["adminform"].form.fields
    assert all("key" not in field for fieldset in response.context["adminform"] for line in fieldset
               for field in line.fields)
    assert device.key not in html
    assert device.key.upper() not in html
    assert device.config_url not in html


def test_the_backup_codes_page_shows_a_count_not_the_codes(staff_client, owner):
    backup = helpers.give_backup_codes(owner, ["1234567890", "2345678901"])

    change = staff_client.get(reverse("admin:otp_static_staticdevice_change", args=[backup.pk]))
    listing = staff_client.get(reverse("admin:otp_static_staticdevice_changelist"))

    for response in (change, listing):
        html = response.content.decode()
        assert "1234567890" not in html and "2345678901" not in html
    assert listing.context["cl"].result_list[0].remaining == 2


def test_authenticators_cannot_be_added_or_edited_in_the_admin(staff_client, owner):
    device = helpers.totp_device(owner)

    add = staff_client.get(reverse("admin:otp_totp_totpdevice_add"))
    edit = staff_client.post(
        reverse("admin:otp_totp_totpdevice_change", args=[device.pk]),
        {"user": owner.pk, "name": "Attacker's phone", "confirmed": "on", "key": "00" * 20},
    )

    assert add.status_code == 403
    assert edit.status_code == 403
    fresh = TOTPDevice.objects.get(pk=device.pk)
    assert (fresh.name, fresh.key) == (device.name, device.key)


def test_deleting_an_authenticator_resets_2fa_and_is_audited(staff_client, staff, owner):
    device = helpers.totp_device(owner)

    response = staff_client.post(reverse("admin:otp_totp_totpdevice_delete", args=[device.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert not TOTPDevice.objects.filter(user=owner).exists()
    event = AuditEvent.objects.get(action=AuditAction.DEVICE_RESET)
    assert (event.actor, event.outcome, event.target) == (staff, AuditOutcome.SUCCEEDED, "user:owner@acme.test")
    assert event.details == {"device": "Authenticator app", "kind": "totpdevice"}
    assert (event.ip_address, event.user_agent) == (STAFF_IP, "staff-browser")
    assert device.key not in str(event.details)


def test_a_2fa_reset_ends_the_users_verified_sessions(staff_client, owner_client, owner, merchant):
    assert owner_client.get(reverse("keys:list", args=[merchant.slug])).status_code == 200

    device = helpers.totp_device(owner)
    staff_client.post(reverse("admin:otp_totp_totpdevice_delete", args=[device.pk]), {"post": "yes"})

    response = owner_client.get(reverse("keys:list", args=[merchant.slug]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("dashboard:sign-in"))


def test_deleting_several_devices_at_once_audits_each(staff_client, owner, merchant):
    viewer = helpers.create_member(merchant, Role.VIEW, "viewer@acme.test")
    backup = helpers.give_backup_codes(owner, ["1234567890"])
    devices = [helpers.totp_device(owner), helpers.totp_device(viewer)]

    staff_client.post(
        reverse("admin:otp_totp_totpdevice_changelist"),
        {"action": "delete_selected", "_selected_action": [d.pk for d in devices], "post": "yes"},
    )
    staff_client.post(reverse("admin:otp_static_staticdevice_delete", args=[backup.pk]), {"post": "yes"})

    assert not TOTPDevice.objects.filter(user__in=[owner, viewer]).exists()
    assert not StaticDevice.objects.filter(user=owner).exists()
    resets = AuditEvent.objects.filter(action=AuditAction.DEVICE_RESET)
    assert sorted((e.target, e.details["kind"]) for e in resets) == [
        ("user:owner@acme.test", "staticdevice"),
        ("user:owner@acme.test", "totpdevice"),
        ("user:viewer@acme.test", "totpdevice"),
    ]


# Memberships in the merchant admin: each change audited


def merchant_form(merchant, rows):
    """The merchant change form as the browser posts it; rows: (membership or None, user, role, delete)."""
    created = timezone.localtime(merchant.created_at)
    existing = [row for row in rows if row[0] is not None]
    data = {
        "name": merchant.name,
        "slug": merchant.slug,
        "support_email": merchant.support_email,
        "created_at_0": created.strftime("%Y-%m-%d"),
        "created_at_1": created.strftime("%H:%M:%S"),
        "memberships-TOTAL_FORMS": str(len(rows)),
        "memberships-INITIAL_FORMS": str(len(existing)),
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
        "_save": "Save",
    }
    for i, (membership, user, role, delete) in enumerate(rows):
        prefix = f"memberships-{i}-"
        data.update({
            prefix + "id": str(membership.pk) if membership else "",
            prefix + "merchant": str(merchant.pk),
            prefix + "user": str(user.pk),
            prefix + "role": role,
        })
        if delete:
            data[prefix + "DELETE"] = "on"
    return data


def save_merchant(client, merchant, rows):
    url = reverse("admin:dashboard_merchant_change", args=[merchant.pk])
    response = client.post(url, merchant_form(merchant, rows))
    assert response.status_code == 302, response.context["errors"] if response.context else response
    return response


@pytest.mark.parametrize("user_id", ["abc", "1.5", "99999999999999999999", ""])
def test_a_member_row_naming_no_user_is_a_form_error_and_changes_nothing(staff_client, owner, merchant, user_id):
    data = merchant_form(merchant, [(Membership.objects.get(user=owner), owner, Role.OWNER, False),
                                    (None, owner, Role.VIEW, False)])
    data["memberships-1-user"] = user_id
    before = list(Membership.objects.values())

    response = staff_client.post(reverse("admin:dashboard_merchant_change", args=[merchant.pk]), data)

    assert response.status_code == 200
    assert response.context["errors"]
    assert list(Membership.objects.values()) == before
    assert not AuditEvent.objects.filter(action__startswith="membership_").exists()


@pytest.mark.parametrize("value", ["abc", "99999999999999999999", "-99999999999999999999"])
@pytest.mark.parametrize("field", ["groups", "user_permissions"])
def test_a_group_or_permission_naming_no_row_is_a_form_error_and_changes_nothing(staff_client, owner, field, value):
    data = {"email": owner.email, "time_zone": "UTC", "is_active": "on", "date_joined_0": "2026-11-27",
            "date_joined_1": "12:00:00", field: value}

    response = staff_client.post(reverse("admin:dashboard_user_change", args=[owner.pk]), data)

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not owner.groups.exists() and not owner.user_permissions.exists()


@pytest.mark.parametrize("row", [(Role.OWNER, True), (Role.VIEW, False)], ids=["removed", "made View"])
def test_the_last_owner_cannot_be_removed_or_demoted(staff_client, owner, merchant, row):
    role, delete = row
    membership = Membership.objects.get(user=owner)
    url = reverse("admin:dashboard_merchant_change", args=[merchant.pk])

    response = staff_client.post(url, merchant_form(merchant, [(membership, owner, role, delete)]))

    assert response.status_code == 200
    assert "A merchant keeps at least one Owner" in response.content.decode()
    assert Membership.objects.get(pk=membership.pk).role == Role.OWNER
    assert not AuditEvent.objects.filter(action__startswith="membership_").exists()


def test_an_owner_can_go_while_another_stays(staff_client, owner, merchant):
    second = helpers.create_member(merchant, Role.OWNER, "second-owner@acme.test")

    save_merchant(staff_client, merchant, [
        (Membership.objects.get(user=owner), owner, Role.OWNER, True),
        (Membership.objects.get(user=second), second, Role.OWNER, False),
    ])

    assert list(Membership.objects.owners_of(merchant).values_list("user__email", flat=True)) == [second.email]


def membership_events():
    return list(
        AuditEvent.objects.filter(action__startswith="membership_").order_by("id")
        .values_list("action", "target", "details")
    )


def test_adding_a_member_in_the_admin_is_audited(staff_client, staff, owner, merchant):
    newcomer = helpers.create_user("newcomer@acme.test")
    owner_membership = Membership.objects.get(user=owner)

    save_merchant(staff_client, merchant, [
        (owner_membership, owner, Role.OWNER, False),
        (None, newcomer, Role.LIMITS, False),
    ])

    assert Membership.objects.get(user=newcomer, merchant=merchant).role == Role.LIMITS
    assert membership_events() == [(AuditAction.MEMBERSHIP_ADDED, "user:newcomer@acme.test", {"role": "limits"})]
    event = AuditEvent.objects.get(action=AuditAction.MEMBERSHIP_ADDED)
    assert (event.actor, event.merchant, event.ip_address) == (staff, merchant, STAFF_IP)


def test_changing_a_role_in_the_admin_is_audited_and_takes_effect(staff_client, owner, merchant):
    viewer = helpers.create_member(merchant, Role.VIEW, "viewer@acme.test")
    viewer_client = Client()
    helpers.sign_in_verified(viewer_client, viewer)
    assert viewer_client.get(reverse("keys:list", args=[merchant.slug])).status_code == 403

    save_merchant(staff_client, merchant, [
        (Membership.objects.get(user=owner), owner, Role.OWNER, False),
        (Membership.objects.get(user=viewer), viewer, Role.OWNER, False),
    ])

    assert membership_events() == [
        (AuditAction.MEMBERSHIP_ROLE_CHANGED, "user:viewer@acme.test", {"from": "view", "to": "owner"})
    ]
    assert viewer_client.get(reverse("keys:list", args=[merchant.slug])).status_code == 200


def test_removing_a_member_in_the_admin_is_audited(staff_client, owner, merchant):
    viewer = helpers.create_member(merchant, Role.VIEW, "viewer@acme.test")

    save_merchant(staff_client, merchant, [
        (Membership.objects.get(user=owner), owner, Role.OWNER, False),
        (Membership.objects.get(user=viewer), viewer, Role.VIEW, True),
    ])

    assert not Membership.objects.filter(user=viewer).exists()
    assert membership_events() == [(AuditAction.MEMBERSHIP_REMOVED, "user:viewer@acme.test", {"role": "view"})]


def test_adding_a_second_membership_for_the_same_user_is_refused(staff_client, owner, merchant):
    owner_membership = Membership.objects.get(user=owner)

    response = staff_client.post(
        reverse("admin:dashboard_merchant_change", args=[merchant.pk]),
        merchant_form(merchant, [(owner_membership, owner, Role.OWNER, False), (None, owner, Role.VIEW, False)]),
    )

    assert response.status_code == 200
    assert response.context["errors"]
    assert list(Membership.objects.filter(user=owner).values_list("role", flat=True)) == [Role.OWNER]
    assert membership_events() == []


def test_saving_the_merchant_without_membership_changes_audits_nothing(staff_client, owner, merchant):
    save_merchant(staff_client, merchant, [(Membership.objects.get(user=owner), owner, Role.OWNER, False)])

    assert membership_events() == []


def test_membership_events_appear_on_the_merchants_activity_tab(staff_client, owner, owner_client, merchant):
    viewer = helpers.create_member(merchant, Role.VIEW, "viewer@acme.test")
    save_merchant(staff_client, merchant, [
        (Membership.objects.get(user=owner), owner, Role.OWNER, False),
        (Membership.objects.get(user=viewer), viewer, Role.EXCHANGE, False),
    ])

    response = owner_client.get(reverse("dashboard:activity", args=[merchant.slug]))

    assert [e.action for e in response.context["events"]] == [AuditAction.MEMBERSHIP_ROLE_CHANGED]
    assert "User viewer@acme.test" in response.content.decode()


# The audit trail in the admin: read-only


def test_audit_events_cannot_be_added_changed_or_deleted_in_the_admin(staff_client, owner, clock):
    event = AuditEvent.objects.create(action=AuditAction.SIGN_IN, actor=owner, actor_email=owner.email)

    view = staff_client.get(reverse("admin:dashboard_auditevent_change", args=[event.pk]))
    add = staff_client.get(reverse("admin:dashboard_auditevent_add"))
    change = staff_client.post(
        reverse("admin:dashboard_auditevent_change", args=[event.pk]),
        {"action": AuditAction.SIGN_OUT, "actor_email": "someone-else@acme.test"},
    )
    delete = staff_client.post(reverse("admin:dashboard_auditevent_delete", args=[event.pk]), {"post": "yes"})
    bulk = staff_client.post(
        reverse("admin:dashboard_auditevent_changelist"),
        {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"},
    )

    assert view.status_code == 200
    assert add.status_code == change.status_code == delete.status_code == 403
    assert bulk.status_code in (200, 302)
    fresh = AuditEvent.objects.get(pk=event.pk)
    assert (fresh.action, fresh.actor_email) == (AuditAction.SIGN_IN, owner.email)
    assert AuditEvent.objects.filter(action=AuditAction.SIGN_IN).count() == 1


# Bad filters in the query string

def _date_fields(model) -> list[str]:
    return [field.name for field in model._meta.get_fields()
            if isinstance(field, (models.DateField, models.DateTimeField)) and not field.auto_created]


REGISTERED = sorted(admin_site._registry.items(), key=lambda item: item[0]._meta.label)


@pytest.mark.parametrize("model, model_admin", REGISTERED, ids=[model._meta.label for model, _ in REGISTERED])
def test_a_date_no_datetime_can_hold_is_a_bad_filter_on_every_change_list_not_a_500(staff_client, model, model_admin):
    assert isinstance(model_admin, StaffModelAdminMixin)
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    for field in _date_fields(model):
        for year in ("10000", "0", "-1"):
            response = staff_client.get(f"{url}?{field}__year={year}")
            assert (response.status_code, response.get("Location")) == (302, f"{url}?e=1"), (field, year)
        # The last day there is: a valid filter, though the date hierarchy's "day after" is not a date.
        response = staff_client.get(f"{url}?{field}__year=9999&{field}__month=12&{field}__day=31")
        if field == model_admin.date_hierarchy:
            assert (response.status_code, response.get("Location")) == (302, f"{url}?e=1"), field
        else:
            assert response.status_code == 200, field


# Staff's edits of currencies, balances and users: refused next to the field, nothing saved

CURRENCY = {"id": "9", "code": "DOGE", "type": "crypto", "minimum_amount": "1", "deposit_fee_percent": "0.5",
            "withdrawal_fee_percent": "0", "precision": "8"}


@pytest.mark.parametrize("field, value, message", [
    ("id", "0", "The platform's ids start at 1."),
    ("code", "doge", "Capital letters, digits, _, - and . only"),
    ("code", "BTC", "Currency with this Currency already exists."),
    ("minimum_amount", "-5", "A minimum cannot be negative."),
    ("deposit_fee_percent", "-1", "A fee cannot be negative."),
    ("withdrawal_fee_percent", "100.5", "A fee is a percentage: at most 100."),
    ("precision", "40000", "At most 18 decimal places"),
])
def test_a_currency_staff_cannot_mean_is_refused_next_to_its_field(staff_client, field, value, message):
    before = list(Currency.objects.values())

    response = staff_client.post(reverse("admin:sandbox_currency_add"), {**CURRENCY, field: value})

    assert response.status_code == 200
    assert any(message in error for error in response.context["adminform"].form.errors[field]), \
        response.context["adminform"].form.errors
    assert not response.context["adminform"].form.non_field_errors()
    assert list(Currency.objects.values()) == before


def test_a_currency_staff_can_mean_is_saved(staff_client):
    response = staff_client.post(reverse("admin:sandbox_currency_add"), CURRENCY)

    assert response.status_code == 302
    assert Currency.objects.get(pk=9).code == "DOGE"


@pytest.mark.parametrize("values", [
    {"id": 0}, {"code": "doge"}, {"minimum_amount": Decimal("-1")}, {"deposit_fee_percent": Decimal("-1")},
    {"withdrawal_fee_percent": Decimal("101")}, {"precision": 19},
])
def test_the_database_holds_the_currency_rules_too(db, values):
    fields = {"id": 9, "code": "DOGE", "type": "crypto", "minimum_amount": Decimal(1), "precision": 8, **values}
    with pytest.raises(IntegrityError), transaction.atomic():
        Currency.objects.create(**fields)


def test_the_migration_that_adds_the_currency_rules_names_the_rows_to_fix_first():
    check = import_module("sandbox.migrations.0006_currency_and_balance_rules").refuse_currencies_that_break_the_new_rules
    rows = [SimpleNamespace(id=1, code="BTC", minimum_amount=Decimal(0), deposit_fee_percent=Decimal(0),
                            withdrawal_fee_percent=Decimal(0), precision=8)]
    rows.append(SimpleNamespace(**{**vars(rows[0]), "code": "usdt-trc20"}))
    rows.append(SimpleNamespace(**{**vars(rows[0]), "code": "EUR", "deposit_fee_percent": Decimal(101)}))
    apps = SimpleNamespace(get_model=lambda *_: SimpleNamespace(objects=SimpleNamespace(all=lambda: rows)))

    with pytest.raises(RuntimeError, match=r"Fix these currencies before migrating .*: usdt-trc20, EUR$"):
        check(apps, None)
    del rows[1:]
    check(apps, None)


def test_a_negative_balance_is_refused_next_to_the_amount(staff_client, merchant):
    response = staff_client.post(reverse("admin:sandbox_balance_add"),
                                 {"merchant": merchant.pk, "currency": 1, "amount": "-1"})

    form = response.context["adminform"].form
    assert form.errors["amount"] == ["A balance cannot be negative."]
    assert not form.non_field_errors()
    assert not Balance.objects.exists()


@pytest.mark.parametrize("email", ["OWNER@acme.test", "Owner@Acme.Test"])
def test_an_email_another_user_has_in_any_case_is_refused_next_to_the_field(staff_client, owner, email):
    add = staff_client.post(reverse("admin:dashboard_user_add"),
                            {"email": email, "usable_password": "false", "password1": "", "password2": ""})
    viewer = helpers.create_user("viewer@acme.test")
    change = staff_client.post(reverse("admin:dashboard_user_change", args=[viewer.pk]),
                               {"email": email, "time_zone": "UTC", "is_active": "on", "date_joined_0": "2026-11-27",
                                "date_joined_1": "12:00:00"})

    for response in (add, change):
        form = response.context["adminform"].form
        assert form.errors["email"] == ["Another user already has this email address."]
        assert not form.non_field_errors()
    assert User.objects.filter(email__iexact="owner@acme.test").count() == 1
    assert User.objects.get(pk=viewer.pk).email == "viewer@acme.test"


def test_an_email_added_in_the_admin_is_stored_as_sign_in_matches_it(staff_client):
    staff_client.post(reverse("admin:dashboard_user_add"),
                      {"email": "New.Person@Acme.Test", "usable_password": "false", "password1": "", "password2": ""})

    assert User.objects.filter(email="new.person@acme.test").exists()


def test_the_merchant_form_says_what_the_slug_is_for_in_words_the_page_shows(staff_client, merchant):
    page = staff_client.get(reverse("admin:dashboard_merchant_change", args=[merchant.pk])).content.decode()

    assert "Appears in dashboard URLs: /m/acme-payments/ for the slug acme-payments." in page


def test_an_unknown_admin_address_is_a_404_for_staff_who_are_also_merchant_members(staff_client, staff, merchant):
    # The admin's catch-all pattern has no name; the dashboard's tabs are worked out for members on every page.
    Membership.objects.create(user=staff, merchant=merchant, role=Role.VIEW)

    assert staff_client.get("/admin/no-such-page/").status_code == 404


# Staff deactivate a merchant's key: a reason, their own fresh 2FA code, audited, the Owners emailed


def deactivate_url(key) -> str:
    return reverse("admin:keys_apikey_deactivate", args=[key.pk])


def key_rows() -> list[dict]:
    return list(ApiKey.objects.order_by("pk").values())


def staff_without_deactivation() -> User:
    """Staff who may look at keys in the admin, and nothing more."""
    user = helpers.create_user("viewer@platform.test")
    user.is_staff = True
    user.save()
    user.user_permissions.add(Permission.objects.get(codename="view_apikey"))
    return user


def test_staff_deactivate_a_key_and_the_api_refuses_it_at_once(
    staff_client, staff, owner, merchant, key_pair, clock, django_capture_on_commit_callbacks
):
    client = Client(REMOTE_ADDR=sandbox_support.ALLOWED_IP)
    sandbox_support.assert_accepted(sandbox_support.api(client, pair=key_pair))

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(deactivate_url(key_pair.key), {
            "reason": "  Secret key posted in a public\nrepository, reported to support  ",
            "code": sandbox_support.fresh_code(clock, staff),
        })

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:keys_apikey_change", args=[key_pair.key.pk])
    key = key_pair.fresh()
    assert key.status == KeyStatus.DEACTIVATED
    assert key.deactivated_by == staff and key.deactivated_at == timezone.now()
    sandbox_support.assert_error(sandbox_support.api(client, pair=key_pair), "bad_header_key")
    event = AuditEvent.objects.get(action=AuditAction.KEY_DEACTIVATED)
    assert (event.actor, event.merchant, event.outcome) == (staff, merchant, AuditOutcome.SUCCEEDED)
    assert event.target == f"api_key:{key.public_key}"
    assert event.details == {"staff_reason": "Secret key posted in a public repository, reported to support"}
    assert event.ip_address == STAFF_IP
    [email] = mail.outbox
    assert email.to == [owner.email]
    assert "By: staff@platform.test (platform staff)" in email.body
    assert "Reason: Secret key posted in a public repository, reported to support" in email.body
    assert "generate and activate a new key" in email.body
    assert key_pair.secret not in email.body
    page = staff_client.get(response["Location"])
    assert "is deactivated" in [str(message) for message in page.context["messages"]][0]


def test_the_owner_sees_staffs_reason_on_the_activity_tab(staff_client, staff, owner_client, merchant, key_pair, clock):
    staff_client.post(deactivate_url(key_pair.key), {
        "reason": "Owner lost their phone; asked support to stop the key", "code": sandbox_support.fresh_code(clock, staff),
    })

    page = owner_client.get(reverse("dashboard:activity", kwargs={"merchant_slug": merchant.slug})).content.decode()

    assert "By platform staff: Owner lost their phone; asked support to stop the key" in page
    assert "staff@platform.test" in page


def test_the_key_page_offers_deactivation_for_an_active_key_only(staff_client, staff, owner, merchant, key_pair, clock):
    page = staff_client.get(reverse("admin:keys_apikey_change", args=[key_pair.key.pk]))
    assert deactivate_url(key_pair.key) in page.content.decode()

    sandbox_support.deactivate(clock, owner, merchant, key_pair)
    page = staff_client.get(reverse("admin:keys_apikey_change", args=[key_pair.key.pk]))
    assert deactivate_url(key_pair.key) not in page.content.decode()


def test_the_deactivation_page_names_the_key_and_its_merchant(staff_client, key_pair):
    page = staff_client.get(deactivate_url(key_pair.key))

    content = page.content.decode()
    assert page.status_code == 200
    assert key_pair.public_key in content and "Acme Payments" in content
    assert 'name="reason"' in content and 'name="code"' in content
    assert key_pair.secret not in content and key_pair.key.encrypted_secret not in content


@pytest.mark.parametrize(("reason", "field", "message"), [
    ("", "reason", "Say why the key is deactivated: its Owners are told."),
    ("   \n ", "reason", "Say why the key is deactivated: its Owners are told."),
    ("x" * 501, "reason", "Use at most 500 characters."),
    ("a\x00b", "reason", "Null characters are not allowed."),
])
def test_a_missing_or_bad_reason_is_refused_next_to_it_and_changes_nothing(
    staff_client, staff, key_pair, clock, reason, field, message
):
    before, events = key_rows(), AuditEvent.objects.count()

    response = staff_client.post(
        deactivate_url(key_pair.key), {"reason": reason, "code": sandbox_support.fresh_code(clock, staff)}
    )

    assert response.status_code == 200
    assert response.context["form"].errors[field] == [message]
    assert key_rows() == before and AuditEvent.objects.count() == events
    assert not mail.outbox


@pytest.mark.parametrize("code", ["000000", "12ab56", ""])
def test_a_wrong_or_malformed_code_is_refused_next_to_it_and_changes_nothing(staff_client, staff, key_pair, clock, code):
    before = key_rows()

    response = staff_client.post(deactivate_url(key_pair.key), {"reason": "Compromised", "code": code})

    assert response.status_code == 200
    assert response.context["form"].errors["code"]
    assert key_rows() == before
    assert not AuditEvent.objects.filter(action=AuditAction.KEY_DEACTIVATED).exists()
    assert not mail.outbox


def test_the_owners_code_does_not_do_for_the_staff_members(staff_client, owner, key_pair, clock):
    before = key_rows()

    response = staff_client.post(
        deactivate_url(key_pair.key), {"reason": "Compromised", "code": sandbox_support.fresh_code(clock, owner)}
    )

    assert response.context["form"].errors["code"] == ["That code is not right. Check your authenticator app and try again."]
    assert key_rows() == before


def test_a_key_that_is_not_active_cannot_be_deactivated_by_staff(staff_client, staff, owner, merchant, key_pair, clock):
    sandbox_support.deactivate(clock, owner, merchant, key_pair)
    before = key_rows()

    page = staff_client.get(deactivate_url(key_pair.key))
    assert "You cannot deactivate an API key that is deactivated." in page.content.decode()
    assert 'name="code"' not in page.content.decode()
    response = staff_client.post(
        deactivate_url(key_pair.key), {"reason": "Compromised", "code": sandbox_support.fresh_code(clock, staff)}
    )

    assert response.context["form"].non_field_errors() == ["You cannot deactivate an API key that is deactivated."]
    assert key_rows() == before
    refusal = AuditEvent.objects.get(action=AuditAction.KEY_DEACTIVATED, actor=staff)
    assert (refusal.outcome, refusal.details) == (AuditOutcome.REFUSED, {"reason": "wrong_status"})


def test_staff_without_the_permission_cannot_deactivate_a_key(db, key_pair, clock):
    viewer = staff_without_deactivation()
    client = Client()
    helpers.sign_in_verified(client, viewer)
    before = key_rows()

    page = client.get(reverse("admin:keys_apikey_change", args=[key_pair.key.pk]))
    assert page.status_code == 200 and deactivate_url(key_pair.key) not in page.content.decode()
    assert client.get(deactivate_url(key_pair.key)).status_code == 403
    response = client.post(
        deactivate_url(key_pair.key), {"reason": "Compromised", "code": sandbox_support.fresh_code(clock, viewer)}
    )

    assert response.status_code == 403
    assert key_rows() == before


def test_the_service_refuses_and_audits_staff_without_the_permission(db, merchant, key_pair, clock):
    viewer = staff_without_deactivation()
    before = key_rows()

    with pytest.raises(services.KeyActionRefused) as refused:
        services.deactivate_key_as_staff(
            actor=viewer, key_id=key_pair.key.pk, reason="Compromised", code=sandbox_support.fresh_code(clock, viewer),
            context=sandbox_support.CTX,
        )

    assert refused.value.code == "not_permitted"
    assert key_rows() == before
    event = AuditEvent.objects.get(action=AuditAction.KEY_DEACTIVATED)
    assert (event.actor, event.merchant, event.outcome, event.details) == (
        viewer, merchant, AuditOutcome.REFUSED, {"reason": "not_permitted"}
    )


def test_members_and_visitors_never_reach_the_deactivation_page(owner_client, key_pair):
    assert owner_client.get(deactivate_url(key_pair.key), follow=True).status_code == 403
    visitor = Client().get(deactivate_url(key_pair.key), follow=True)
    assert visitor.request["PATH_INFO"] == reverse("dashboard:sign-in")
    assert Client().post(deactivate_url(key_pair.key), {"reason": "x", "code": "123456"}).status_code == 302
    assert key_pair.fresh().status == KeyStatus.ACTIVE


def test_deactivating_a_key_that_does_not_exist_is_a_404(staff_client):
    assert staff_client.get(reverse("admin:keys_apikey_deactivate", args=[987654])).status_code == 404
    assert staff_client.post(reverse("admin:keys_apikey_deactivate", args=[987654]), {"reason": "x"}).status_code == 404


# Merchants: one with API keys or an audit trail is kept; one made by mistake can go


def test_a_merchant_with_keys_or_an_audit_trail_cannot_be_deleted_and_the_page_says_why(staff_client, merchant, key_pair):
    change = staff_client.get(reverse("admin:dashboard_merchant_change", args=[merchant.pk])).content.decode()
    delete_url = reverse("admin:dashboard_merchant_delete", args=[merchant.pk])

    assert delete_url not in change
    assert "it cannot be deleted" in change
    assert staff_client.get(delete_url).status_code == 403
    assert staff_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert Merchant.objects.filter(pk=merchant.pk).exists()
    assert ApiKey.objects.filter(merchant=merchant).count() == 1


def test_a_merchant_with_only_audit_events_is_kept_too(staff_client, merchant, owner):
    AuditEvent.objects.create(action=AuditAction.SIGN_IN, actor=owner, merchant=merchant)

    assert staff_client.post(
        reverse("admin:dashboard_merchant_delete", args=[merchant.pk]), {"post": "yes"}
    ).status_code == 403
    assert Merchant.objects.filter(pk=merchant.pk).exists()


def test_a_merchant_made_by_mistake_can_be_deleted_with_its_members(staff_client, staff):
    mistake = helpers.create_merchant("Typo Payments")
    helpers.create_member(mistake, Role.VIEW)
    change = staff_client.get(reverse("admin:dashboard_merchant_change", args=[mistake.pk])).content.decode()
    delete_url = reverse("admin:dashboard_merchant_delete", args=[mistake.pk])
    assert delete_url in change and "it cannot be deleted" not in change

    response = staff_client.post(delete_url, {"post": "yes"})

    assert response.status_code == 302
    assert not Merchant.objects.filter(pk=mistake.pk).exists()
    assert not Membership.objects.filter(merchant_id=mistake.pk).exists()


def test_the_merchant_page_asks_once_whether_the_merchant_is_kept(staff_client):
    mistake = helpers.create_merchant("Typo Payments")

    with CaptureQueriesContext(connection) as captured:
        page = staff_client.get(reverse("admin:dashboard_merchant_change", args=[mistake.pk]))

    assert page.status_code == 200
    assert reverse("admin:dashboard_merchant_delete", args=[mistake.pk]) in page.content.decode()
    asked = [query["sql"] for query in captured.captured_queries
             if '"keys_apikey"' in query["sql"] or '"dashboard_auditevent"' in query["sql"]]
    assert len(asked) == 2, asked  # one for its keys, one for its audit events


def test_merchants_are_not_offered_for_deletion_in_bulk(staff_client, merchant):
    changelist = staff_client.get(reverse("admin:dashboard_merchant_changelist"))

    action_form = changelist.context["action_form"]
    assert action_form is None or "delete_selected" not in dict(action_form.fields["action"].choices)
    response = staff_client.post(
        reverse("admin:dashboard_merchant_changelist"),
        {"action": "delete_selected", "_selected_action": [merchant.pk], "post": "yes"},
    )
    assert response.status_code in (200, 302)
    assert Merchant.objects.filter(pk=merchant.pk).exists()


# Times in the admin carry their zone, the staff member's chosen one


@pytest.mark.parametrize(("time_zone", "shown"), [
    ("UTC", "2026-11-27 12:01:00 UTC"),
    ("Europe/Berlin", "2026-11-27 13:01:00 CET"),
    ("America/New_York", "2026-11-27 07:01:00 EST"),
])
def test_the_admin_shows_each_time_with_its_zone(staff, staff_client, key_pair, time_zone, shown):
    staff.time_zone = time_zone
    staff.save()

    page = staff_client.get(reverse("admin:keys_apikey_change", args=[key_pair.key.pk])).content.decode()

    assert key_pair.key.activated_at.isoformat() == "2026-11-27T12:01:00+00:00"
    assert shown in page
