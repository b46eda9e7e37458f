"""System checks: the failure ceiling's setting, and (with `manage.py check --deploy`) what the dashboard needs
shared between workers."""
from django.conf import settings
from django.core import checks

from .rate_limit import failure_ceiling

PER_PROCESS_CACHES = {
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
}


@checks.register(checks.Tags.security, checks.Tags.caches, deploy=True)
def cache_shared_between_workers(app_configs, **kwargs):
    if settings.CACHES["default"]["BACKEND"] in PER_PROCESS_CACHES:
        return [
            checks.Warning(
                "The cache is kept in each process, so the hourly ceiling on failed sign-in and 2FA attempts "
                "and the request log's pruning count are per worker, not per account.",
                hint="Set REDIS_URL (redis://HOST:6379/0) so every worker shares one cache.",
                id="dashboard.W001",
            )
        ]
    return []


@checks.register(checks.Tags.security)
def failure_ceiling_is_positive(app_configs, **kwargs):
    limit = failure_ceiling()
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        return [
            checks.Error(
                f"AUTH_FAILURES_PER_HOUR is {limit!r}: the ceiling on failed sign-in and 2FA attempts needs a whole "
                "number of at least 1.",
                id="dashboard.E001",
            )
        ]
    return []
