"""The log line of each refused API request, with repeats folded.

A client that sends the same refused request again and again (a wrong secret in a loop, a retrying job)
writes, in each worker process, one line a second for each (reason, key, address), and the next line says how
many were not written since. The line was the costliest part of a refusal (85k of its 1.5M instructions), and
anyone who knows a public key could otherwise fill the log as fast as the API answers.
"""
from __future__ import annotations

import logging
from time import monotonic

from dashboard.audit import escape_for_log

logger = logging.getLogger("sandbox.api")

REPEAT_WINDOW_SECONDS = 1.0
# Kinds of refusal remembered at once; beyond this (a flood of made-up keys) all are forgotten, which only
# means a line each for the next ones.
MAX_KINDS = 10_000

# (code, public key, address) -> [monotonic time of its last line, refusals not written since]
_last_lines: dict[tuple[str, str, str | None], list] = {}


def log_refusal(code: str, public_key: str, address: str | None, path: str) -> None:
    kind = (code, public_key, address)
    now = monotonic()
    seen = _last_lines.get(kind)
    if seen is not None and now - seen[0] < REPEAT_WINDOW_SECONDS:
        seen[1] += 1
        return
    if len(_last_lines) >= MAX_KINDS:
        _last_lines.clear()
    _last_lines[kind] = [now, 0]
    line, args = "api refused code=%s key=%s ip=%s path=%s", [code, public_key, address, escape_for_log(path)]
    if seen is not None and seen[1]:
        line, args = line + " repeats_not_logged=%d", [*args, seen[1]]
    logger.info(line, *args)
