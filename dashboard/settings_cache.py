"""Values derived from settings that the sandbox API needs on every request, worked out once per process.

Each attribute read of ``django.conf.settings`` runs ``LazyObject.__getattribute__`` in Python: about 3,400
instructions (callgrind), and a signed request read about ten, a tenth of what it costs beyond Django's own
floor. What is kept here is forgotten whenever Django announces that a setting changed (``setting_changed``:
``override_settings`` and pytest-django's ``settings`` fixture send it); settings change no other way.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

T = TypeVar("T", bound=Callable)

_kept: list = []


def until_settings_change(function: T) -> T:
    """``function`` with its answers kept (per arguments) until a setting changes; a raised error is not kept."""
    kept = functools.cache(function)
    _kept.append(kept)
    return kept


@until_settings_change
def cached_setting(name: str):
    return getattr(settings, name)


@receiver(setting_changed)
def _forget_kept_answers(**kwargs) -> None:
    for kept in _kept:
        kept.cache_clear()
