"""The last requests of each merchant, and when each key was last used."""
from __future__ import annotations

from datetime import timedelta

from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from keys.models import ApiKey

from .models import REQUEST_LOG_SIZE, ApiRequest

# A key's "last used" is written at most this often, so a busy key does not cost a write per request.
LAST_USED_INTERVAL = timedelta(minutes=1)
# Trimming the log every request would double its cost; every hundredth insert of a merchant keeps it near the limit.
PRUNE_EVERY = 100


def record_request(*, key: ApiKey, client_ip: str | None, method: str, path: str, status: int, error_code: str) -> None:
    # One plain INSERT: the ORM's save() machinery cost the API a fifth of its throughput (see bench/).
    table = connection.ops.quote_name(ApiRequest._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (merchant_id, api_key_id, created_at, ip_address, method, path, status, error_code)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                key.merchant_id, key.pk, connection.ops.adapt_datetimefield_value(timezone.now()), client_ip,
                method[:10], path[:200], status, error_code,
            ],
        )
    if _count_insert(key.merchant_id) % PRUNE_EVERY == 0:
        prune(key.merchant_id)


def _count_insert(merchant_id: int) -> int:
    """Inserts of this merchant so far (per cache lifetime), shared by all workers through the cache."""
    counter = f"request-log-inserts:{merchant_id}"
    cache.add(counter, 0, timeout=None)
    try:
        return cache.incr(counter)
    except ValueError:
        cache.add(counter, 1, timeout=None)
        return 1


def prune(merchant_id: int) -> int:
    """Delete all but the newest REQUEST_LOG_SIZE requests of the merchant; returns how many went."""
    oldest_kept = list(
        ApiRequest.objects.filter(merchant_id=merchant_id).order_by("-id").values_list("id", flat=True)
        [REQUEST_LOG_SIZE - 1 : REQUEST_LOG_SIZE]
    )
    if not oldest_kept:
        return 0
    deleted, _ = ApiRequest.objects.filter(merchant_id=merchant_id, id__lt=oldest_kept[0]).delete()
    return deleted


def mark_used(key: ApiKey, client_ip: str | None) -> None:
    now = timezone.now()
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_INTERVAL:
        return
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=now, last_used_ip=client_ip)
