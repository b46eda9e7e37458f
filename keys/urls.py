from django.urls import path

from . import views

app_name = "keys"


def action(route: str, view, name: str) -> list:
    """An action answering POST only at ``route``, and the page with its form at ``route``/form/."""
    return [
        path(route, view.as_view(), name=name),
        path(f"{route}form/", view.as_view(http_method_names=["get", "head"]), name=f"{name}-form"),
    ]


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
