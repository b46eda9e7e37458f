"""PostgreSQL: the change notifications of migration 0003 carry the transaction's id, so that the committing
process can wait for every worker to acknowledge its very change (sandbox/key_lookup_cache.py); and a key's
trigger fires only for the columns the API's kept lookups decide with, not for its last-use time, written as
keys are used. Other databases need nothing.
"""
from django.db import migrations

CHANNEL = "sandbox_api_data"  # sandbox.key_lookup_cache.CHANGES_CHANNEL, as it was when this migration was written
FUNCTION = "sandbox_notify_api_data_changed"
# What the API reads of a key (keys.models.API_FIELDS) but its last use.
KEY_COLUMNS = ("id", "merchant_id", "public_key", "status", "encrypted_secret", "allowed_networks")


def _function(payload: str) -> str:
    return (f"CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN PERFORM pg_notify('{CHANNEL}', {payload}); RETURN NULL; END $$")


def _key_trigger(schema_editor, table: str, events: str) -> None:
    quoted = schema_editor.quote_name(table)
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_notify_api_data ON {quoted}")
    schema_editor.execute(f"CREATE TRIGGER {table}_notify_api_data AFTER {events} ON {quoted}"
                          f" FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()")


def _notify_with(apps, schema_editor, payload: str, key_events: str) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(_function(payload))
    _key_trigger(schema_editor, apps.get_model("keys", "ApiKey")._meta.db_table, key_events)


def forwards(apps, schema_editor):
    _notify_with(apps, schema_editor, "txid_current()::text",
                 f"INSERT OR UPDATE OF {', '.join(KEY_COLUMNS)} OR DELETE OR TRUNCATE")


def backwards(apps, schema_editor):
    _notify_with(apps, schema_editor, "TG_TABLE_NAME", "INSERT OR UPDATE OR DELETE OR TRUNCATE")


class Migration(migrations.Migration):
    dependencies = [("sandbox", "0003_api_data_change_notifications")]

    operations = [migrations.RunPython(forwards, backwards)]
