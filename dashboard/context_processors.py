"""The header and tabs every dashboard page shows, decided here so templates only show them."""
from dataclasses import dataclass

from django.urls import reverse

from .models import Membership, Role


@dataclass(frozen=True)
class Tab:
    label: str
    url: str
    active: bool


TABS = [
    # (label, url name, roles that see it, url names that make it active)
    ("Overview", "dashboard:overview", {Role.VIEW, Role.EXCHANGE, Role.LIMITS, Role.OWNER}, {"overview"}),
    ("API keys", "keys:list", {Role.OWNER}, {"list", "archived", "generate", "activate", "deactivate",
                                             "allowlist", "rename", "archive"}),
    ("API requests", "integration:request-log", {Role.OWNER}, {"request-log"}),
    ("Signature checker", "integration:signature-check", {Role.OWNER}, {"signature-check"}),
    ("Members", "dashboard:members", {Role.OWNER}, {"members", "member-role", "member-remove", "member-invite",
                                                   "invitation-withdraw"}),
    ("Activity", "dashboard:activity", {Role.OWNER}, {"activity"}),
    ("Contact support", "dashboard:support", set(Role), {"support"}),
]


def navigation(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.is_verified():
        return {}
    memberships = list(Membership.objects.for_user(user))
    current = getattr(request, "membership", None)
    if current is None:
        current = next((m for m in memberships if m.merchant_id == user.last_merchant_id), None)
    if current is None and memberships:
        current = memberships[0]
    match = getattr(request, "resolver_match", None)
    url_name = (match.url_name or "") if match else ""  # a pattern without a name (the admin's catch-all) has None
    tabs = []
    if current is not None:
        slug = current.merchant.slug
        for label, name, roles, active_names in TABS:
            if current.role in roles:
                # A form's own page ("activate-form") belongs to the tab of its action.
                active = url_name.removesuffix("-form") in active_names and match.namespace == name.split(":")[0]
                tabs.append(Tab(label, reverse(name, kwargs={"merchant_slug": slug}), active))
    tabs.append(Tab("Account security", reverse("dashboard:account-security"), url_name == "account-security"))
    return {
        "nav_memberships": memberships,
        "nav_current": current,
        "nav_tabs": tabs,
    }
