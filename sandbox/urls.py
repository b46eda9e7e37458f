from django.urls import path, re_path

from . import views

app_name = "sandbox"

urlpatterns = [
    path("ping", views.ping, name="ping"),
    path("accounts/list", views.accounts_list, name="accounts-list"),
    path("currencies/list", views.currencies_list, name="currencies-list"),
    # Anything else under /api/v2/ answers JSON, never the dashboard's HTML 404 page.
    re_path(r"^(?P<rest>.*)$", views.not_found, name="not-found"),
]
