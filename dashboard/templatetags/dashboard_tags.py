"""Template tags of the dashboard's pages."""
from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()


@register.simple_tag
def local_time(value: datetime, seconds: bool = False) -> str:
    """A moment in the viewer's time zone, as a <time> element: "2026-11-27 14:05 CET".

    A tag rather than an included template: lists render one per row and cell, and an include with four
    date filters cost a tenth of the API keys page's time.
    """
    local = timezone.localtime(value)
    shown = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    return format_html('<time datetime="{}">{}&nbsp;{}</time>', local.isoformat(), shown, local.tzname())
