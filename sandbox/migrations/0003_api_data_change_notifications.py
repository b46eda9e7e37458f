"""PostgreSQL: NOTIFY sandbox.key_lookup_cache.CHANGES_CHANNEL whenever a table the API's kept lookups come from
changes, so that each worker drops what it kept (sandbox/key_lookup_cache.py). Statement triggers: one
notification per statement, and PostgreSQL folds a transaction's identical ones into one, sent at commit.
Other databases need nothing: SQLite says itself when its file changed.
"""
from django.db import migrations

CHANNEL = "sandbox_api_data"  # sandbox.key_lookup_cache.CHANGES_CHANNEL, as it was when this migration was written
FUNCTION = "sandbox_notify_api_data_changed"
MODELS = (("keys", "ApiKey"), ("sandbox", "Balance"), ("sandbox", "Currency"))


def _tables(apps) -> list[str]:
    return [apps.get_model(app, model)._meta.db_table for app, model in MODELS]


def create_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"CREATE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME); RETURN NULL; END $$"
    )
    for table in _tables(apps):
        schema_editor.execute(
            f"CREATE TRIGGER {table}_notify_api_data AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE"
            f" ON {schema_editor.quote_name(table)} FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()"
        )


def drop_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in _tables(apps):
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_notify_api_data ON {schema_editor.quote_name(table)}")
    schema_editor.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")


class Migration(migrations.Migration):
    dependencies = [
        ("keys", "0002_apikey_merchant_newest"),
        ("sandbox", "0002_currencies"),
    ]

    operations = [migrations.RunPython(create_triggers, drop_triggers)]
