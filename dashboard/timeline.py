"""Pages of a newest-first list that only grows (the audit trail), found without counting the list.

A page is the ``size`` entries just older (or just newer) than the entry a link names: ``?before=<id>``
for the next older page, ``?after=<id>`` for the next newer one, nothing for the newest. The cost of a page is
two indexed queries however long the list is; ``Paginator`` would count every row on every page.
Entries are ordered by (created_at, id), both descending, so entries with the same time keep one order.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q, QuerySet


@dataclass(frozen=True)
class TimelinePage:
    entries: list
    newer_than: int | None  # id for the "Newer" link, None on the newest page
    older_than: int | None  # id for the "Older" link, None on the oldest page

    @property
    def has_other_pages(self) -> bool:
        return self.newer_than is not None or self.older_than is not None


def _cursor(value: str | None) -> int | None:
    # Anything but a positive id (a mangled or hand-written link) opens the newest page.
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


def timeline_page(entries: QuerySet, query, size: int) -> TimelinePage:
    """The page of ``entries`` that the ``before``/``after`` parameters of ``query`` (request.GET) name.

    A link whose entry is gone or belongs to another list, or that leads past either end, opens the newest page.
    """
    before, after = _cursor(query.get("before")), _cursor(query.get("after"))
    anchor_id = before if before is not None else after
    anchor = entries.filter(pk=anchor_id).values_list("created_at", "id").first() if anchor_id is not None else None
    if anchor is not None:
        created_at, pk = anchor
        if before is not None:
            older = Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=pk)
            rows = list(entries.filter(older).order_by("-created_at", "-id")[: size + 1])
            if rows:
                shown = rows[:size]
                return TimelinePage(shown, shown[0].pk, shown[-1].pk if len(rows) > size else None)
        else:
            newer = Q(created_at__gt=created_at) | Q(created_at=created_at, id__gt=pk)
            rows = list(entries.filter(newer).order_by("created_at", "id")[: size + 1])
            if len(rows) > size:
                shown = rows[:size][::-1]
                return TimelinePage(shown, shown[0].pk, shown[-1].pk)
            # Fewer than a page is newer: that is the newest page.
    rows = list(entries.order_by("-created_at", "-id")[: size + 1])
    shown = rows[:size]
    return TimelinePage(shown, None, shown[-1].pk if len(rows) > size else None)
