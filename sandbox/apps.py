from django.apps import AppConfig
from django.core.signals import request_finished


class SandboxConfig(AppConfig):
    name = "sandbox"
    verbose_name = "Sandbox API"

    def ready(self):
        from .request_log import writer

        # After the response has gone out: write the request log's batch when it is due.
        request_finished.connect(writer.flush_if_due, dispatch_uid="sandbox.request_log.flush_if_due")
