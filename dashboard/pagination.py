"""The page a list view shows for the ``page`` a visitor asked for."""
from __future__ import annotations

from django.core.paginator import Page, Paginator


def requested_page(paginator: Paginator, requested: str | None) -> Page:
    """``paginator.get_page(requested)``, except that a number below 1 shows the first page: Django shows the last
    for any number out of range, so ``?page=0`` of a long list jumped to its oldest rows."""
    try:
        number = int(requested)
    except (TypeError, ValueError):
        return paginator.get_page(requested)  # no number: the first page
    return paginator.get_page(max(number, 1))
