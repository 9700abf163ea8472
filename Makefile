# `make run` and `make test` are all a fresh machine needs (python3 >= 3.11 on PATH).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# newman (Postman's collection runner) for tests/test_postman_collection.py: pinned in
# tests/postman/package-lock.json. Only the tests need it (and node/npm); `make run` does not.
NEWMAN_STAMP := tests/postman/node_modules/.installed
# The official Node SDK for tests/test_node_sdk.py, pinned in tests/node/package-lock.json.
NODE_SDK_STAMP := tests/node/node_modules/.installed

.PHONY: install run test lint migrate bench bench-streams bench-console clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

$(NEWMAN_STAMP): tests/postman/package.json tests/postman/package-lock.json
	npm ci --prefix tests/postman --no-audit --no-fund
	touch $(NEWMAN_STAMP)

$(NODE_SDK_STAMP): tests/node/package.json tests/node/package-lock.json
	npm ci --prefix tests/node --no-audit --no-fund
	touch $(NODE_SDK_STAMP)

install: $(STAMP) $(NEWMAN_STAMP) $(NODE_SDK_STAMP)

migrate: $(STAMP)
	$(BIN)/flask --app app db upgrade

run: migrate
	$(BIN)/gunicorn --config gunicorn.conf.py 'app:create_app()'

lint: install
	$(BIN)/ruff check .

# The suite in parallel (pytest-xdist), one test file per worker at a time; each worker has
# databases of its own (tests/conftest.py). `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 6
test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Benchmarks (minutes; needs wrk: apt-get install wrk). Not part of `make test`.
bench: migrate
	$(BIN)/python bench/run.py

# Long streams and idle/slow clients, beside LiteLLM (about 5 minutes; no wrk needed).
bench-streams: migrate
	$(BIN)/python bench/streams.py --idle

# Every console page timed on 1,000,000 exchanges, SQLite and PostgreSQL (bench/README.md:
# "Console pages"). BENCH_CONSOLE_ARGS=--reuse keeps the databases made last time.
bench-console: $(STAMP)
	$(BIN)/python bench/console.py $(BENCH_CONSOLE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache tests/postman/node_modules tests/node/node_modules
