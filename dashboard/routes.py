"""URL patterns shared by the apps' urls modules."""
from django.urls import path


def action(route: str, view, name: str) -> list:
    """An action answering POST only at ``route``, and the page with its form at ``route``/form/."""
    return [
        path(route, view.as_view(), name=name),
        path(f"{route}form/", view.as_view(http_method_names=["get", "head"]), name=f"{name}-form"),
    ]
