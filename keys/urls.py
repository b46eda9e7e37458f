from django.urls import path

from dashboard.routes import action

from . import views

app_name = "keys"


urlpatterns = [
    path("", views.KeyListView.as_view(), name="list"),
    path("archived/", views.ArchivedKeyListView.as_view(), name="archived"),
    *action("generate/", views.GenerateKeyView, "generate"),
    *action("<int:key_id>/activate/", views.ActivateKeyView, "activate"),
    *action("<int:key_id>/deactivate/", views.DeactivateKeyView, "deactivate"),
    *action("<int:key_id>/ip-addresses/", views.AllowlistView, "allowlist"),
    *action("<int:key_id>/rename/", views.RenameKeyView, "rename"),
    *action("<int:key_id>/archive/", views.ArchiveKeyView, "archive"),
]
