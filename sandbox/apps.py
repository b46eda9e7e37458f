from django.apps import AppConfig
from django.db.backends.signals import connection_created


class SandboxConfig(AppConfig):
    name = "sandbox"
    verbose_name = "Sandbox API"

    def ready(self) -> None:
        from .key_lookup_cache import listen_on_new_connection

        connection_created.connect(listen_on_new_connection, dispatch_uid="sandbox.key_lookup_cache")
