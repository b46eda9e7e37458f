"""gunicorn's settings for this project, read from the working directory by every gunicorn started here
(`make serve`, `make bench`, the production test). Command-line options add to them."""
import sys

# The access log line made from the fields its format prints only (dashboard/access_log.py).
logger_class = "dashboard.access_log.AccessLogger"

# How long a thread that wants the GIL waits for the one holding it before asking it to let go: 5 ms by default.
# A worker's request thread shares it with its request-log writer thread (sandbox/request_log.py), and each wait
# fell on the requests in flight. At 1 ms, side by side under load on PostgreSQL, the signed request's p99 was 0.14 to
# 0.30 × ping's lower in four runs out of four; a worker with one busy thread (ping's, the pages') never waits.
WORKER_SWITCH_INTERVAL = 0.001


def post_worker_init(worker):
    sys.setswitchinterval(WORKER_SWITCH_INTERVAL)
