from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Merchants, members and audit trail"

    def ready(self):
        from . import checks  # noqa: F401  (registers the deployment checks)


class DashboardAdminConfig(AdminConfig):
    """The admin panel, behind the same two-factor sign-in as the dashboard."""

    default_site = "dashboard.admin_site.StaffAdminSite"
