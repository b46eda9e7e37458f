# The two commands: `make demo` and `make test`. Everything else here serves them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

WORKERS ?= 2

.PHONY: demo test serve install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# The demo runs with DEBUG on, on the SQLite file var/db.sqlite3 unless DATABASE_URL says otherwise.
demo: export DJANGO_DEBUG = 1
demo: install
	mkdir -p var
	$(BIN)/python manage.py migrate --no-input -v 0
	$(BIN)/python manage.py seed_demo
	@echo
	@echo "Open http://$(HOST):$(PORT)/ and sign in as owner@demo.test with password owner-demo-password."
	@echo "For the 2FA code, add the TOTP secret above to an authenticator app, or run in another terminal:"
	@echo "    $(BIN)/python manage.py totp_code owner@demo.test    (with DJANGO_DEBUG=1)"
	@echo "Staff: staff@demo.test / staff-demo-password, then http://$(HOST):$(PORT)/admin/"
	@echo
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

# Two test processes (pytest-xdist), one per core: the suite took 56–70 s in one on a slow day of this host.
TEST_PROCESSES ?= 2

# Bytecode is written even where the environment says not to (PYTHONDONTWRITEBYTECODE, set on this project's
# machines): each test process otherwise compiled the project and rewrote every test module's asserts again, 4–5 s
# of its start on a slow host (collection 5.6 s → 1.2 s). __pycache__ is ignored by git.
test: export PYTHONDONTWRITEBYTECODE =
test: install-dev
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) $(PYTEST_ARGS)

# Production mode: gunicorn, DEBUG off, settings from the environment (README, "Running for real").
serve: install
	$(BIN)/python manage.py check --deploy --fail-level WARNING
	$(BIN)/python manage.py migrate --no-input -v 0
	$(BIN)/python manage.py collectstatic --no-input -v 0
	$(BIN)/gunicorn dashboard.wsgi --workers $(WORKERS) --bind $(HOST):$(PORT) --access-logfile -

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis

# Load test of the production stack (gunicorn, DEBUG off) with wrk; writes bench/results.md and bench/results.png.
.PHONY: bench
# The runtime packages only (the bench runs none of the tests); matplotlib, for the chart alone, is not byte-compiled
# at install: the chart imports a small part of it (on a slow host 22 s less from a fresh clone).
bench: install
	@command -v wrk >/dev/null || apt-get install -y -qq wrk || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m pip install --quiet --no-compile -r bench/requirements.txt
	$(BIN)/python bench/run.py
