"""Which page a list shows for the ``page`` asked for (dashboard.pagination.requested_page)."""
from __future__ import annotations

import pytest
from django.core.paginator import Paginator

from dashboard.pagination import requested_page


@pytest.mark.parametrize(("requested", "shown"), [
    (None, 1), ("", 1), ("1", 1), ("2", 2), (" 2 ", 2), ("3", 3),
    ("0", 1), ("-1", 1), ("-999", 1),  # Django's get_page showed the last page for these
    ("4", 3), ("99999999999999999999", 3),  # beyond the end: the last, as before
    ("two", 1), ("2.5", 1), ("1e3", 1),  # not a page number: the first, as before
])
def test_the_page_shown_for_each_request(requested, shown):
    assert requested_page(Paginator(range(25), 10), requested).number == shown

