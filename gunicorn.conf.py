"""gunicorn's settings for this project, read from the working directory by every gunicorn started here
(`make serve`, `make bench`, the production test). Command-line options add to them."""

# The access log line made from the fields its format prints only (dashboard/access_log.py).
logger_class = "dashboard.access_log.AccessLogger"
