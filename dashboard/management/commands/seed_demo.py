"""Create the demo merchant, its users and a staff account, idempotently, and print how to sign in."""
import json
from decimal import Decimal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from dashboard.models import Membership, Merchant, Role, User
from dashboard.two_factor import TOTP_DEVICE_NAME, format_manual_key
from sandbox.models import Balance

DEMO_MERCHANT = {"name": "Demo Merchant", "slug": "demo-merchant", "support_email": "support@demo.test"}
# Fixed, documented passwords: this data exists to be signed in with, on a developer's machine.
DEMO_USERS = [
    ("owner@demo.test", "Demo Owner", Role.OWNER, "owner-demo-password"),
    ("viewer@demo.test", "Demo Viewer", Role.VIEW, "viewer-demo-password"),
    ("restricted@demo.test", "Demo Restricted", Role.RESTRICTED, "restricted-demo-password"),
]
DEMO_STAFF = ("staff@demo.test", "Demo Staff", "staff-demo-password")
# Sandbox balances by currency id (sandbox/migrations/0002_currencies.py): BTC, ETH, USDT.
DEMO_BALANCES = {1: Decimal("0.04"), 2: Decimal("1.25"), 4: Decimal("1500")}


def _ensure_user(email: str, full_name: str, password: str, *, staff: bool = False) -> tuple[User, TOTPDevice]:
    user = User.objects.filter(email__iexact=email).first() or User(email=email)
    user.full_name = full_name
    user.is_active = True
    user.is_staff = user.is_superuser = staff
    user.set_password(password)
    user.save()
    device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=TOTP_DEVICE_NAME, confirmed=True)
    return user, device


def _describe(user: User, password: str, device: TOTPDevice, role: str | None = None) -> dict:
    described = {
        "email": user.email,
        "password": password,
        "totp_secret": format_manual_key(device).replace(" ", ""),
        "otpauth_uri": device.config_url,
    }
    if role is not None:
        described["role"] = role
    return described


class Command(BaseCommand):
    help = "Create (or reset) the demo merchant with an Owner, a View and a Restricted user, and a staff user."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the sign-in details as one JSON object.")
        parser.add_argument("--force", action="store_true", help="Run even with DEBUG off (never on a real server).")

    def handle(self, *args, **options):
        if not settings.DEBUG and not options["force"]:
            raise CommandError("seed_demo creates accounts with published passwords; it runs only with DEBUG on "
                               "(DJANGO_DEBUG=1), or with --force.")
        with transaction.atomic():
            merchant, _ = Merchant.objects.update_or_create(
                slug=DEMO_MERCHANT["slug"], defaults={"name": DEMO_MERCHANT["name"],
                                                      "support_email": DEMO_MERCHANT["support_email"]}
            )
            users = []
            for email, full_name, role, password in DEMO_USERS:
                user, device = _ensure_user(email, full_name, password)
                Membership.objects.update_or_create(user=user, merchant=merchant, defaults={"role": role})
                users.append(_describe(user, password, device, Role(role).label))
            for currency_id, amount in DEMO_BALANCES.items():
                Balance.objects.update_or_create(merchant=merchant, currency_id=currency_id, defaults={"amount": amount})
            staff_email, staff_name, staff_password = DEMO_STAFF
            staff, staff_device = _ensure_user(staff_email, staff_name, staff_password, staff=True)
        result = {
            "merchant": {"name": merchant.name, "slug": merchant.slug},
            "users": users,
            "staff": _describe(staff, staff_password, staff_device),
        }
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2))
            return
        self.stdout.write(f"Demo merchant: {merchant.name} (/m/{merchant.slug}/)\n")
        for entry in [*users, {**result["staff"], "role": "Platform staff (admin panel)"}]:
            self.stdout.write(
                f"  {entry['role']:<28} {entry['email']:<24} password: {entry['password']}\n"
                f"  {'':<28} TOTP secret: {entry['totp_secret']}\n"
                f"  {'':<28} {entry['otpauth_uri']}\n"
            )
        self.stdout.write("Current 2FA code of a user: python manage.py totp_code EMAIL\n")
