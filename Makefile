# The two commands of the README: `make run` serves the product, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1

.PHONY: run test install migrate demo serve worker bench lint

# Trying it out locally runs with DEBUG on (and so the fixed development SECRET_KEY) unless DEBUG
# is set; production refuses to start without a SECRET_KEY of its own.
run demo serve worker: export DEBUG ?= true

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $@

install: $(VENV)/.installed

migrate: install
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py collectstatic --noinput -v0

demo: migrate
	@$(BIN)/python manage.py demo

# Without REDIS_URL the counters live in the process, so the embedded default runs one worker.
serve: install
	$(BIN)/gunicorn nemo.asgi:application -c gunicorn.conf.py -k uvicorn_worker.UvicornWorker -w $(WORKERS) -b $(HOST):$(PORT)

run: demo serve

worker: install
	$(BIN)/celery -A nemo worker -B -l info

lint: install
	$(BIN)/ruff check .

# The layers are a contract (pyproject.toml, [tool.importlinter]): checked after ruff, before the tests.
test: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench
