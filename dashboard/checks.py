"""Deployment checks of what the dashboard needs shared between workers (run by `manage.py check --deploy`)."""
from django.conf import settings
from django.core import checks

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
