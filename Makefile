# `make run` and `make test` are all a fresh machine needs (python3 >= 3.11 on PATH).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint migrate bench bench-streams clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/flask --app app db upgrade

run: migrate
	$(BIN)/gunicorn --config gunicorn.conf.py 'app:create_app()'

lint: install
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

# Benchmarks (minutes; needs wrk: apt-get install wrk). Not part of `make test`.
bench: migrate
	$(BIN)/python bench/run.py

# Long streams and idle/slow clients, beside LiteLLM (about 5 minutes; no wrk needed).
bench-streams: migrate
	$(BIN)/python bench/streams.py --idle

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
