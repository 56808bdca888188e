# Two commands: `make run` (the bot on an embedded default) and `make test` (the suite on real services).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Development default: human-readable logs.
export LOG_FORMAT ?= text

.PHONY: run test install install-dev bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# `make run` is for trying the bot on this machine: development mode (127.0.0.1 only, development token).
run: export BOT_ENV ?= development
run: install
	$(BIN)/python -m bot db upgrade
	$(BIN)/python -m bot demo seed
	exec $(BIN)/python -m bot serve

test: install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-dev
	$(BIN)/python bench/faq_match.py
	$(BIN)/python bench/webhook.py

clean:
	rm -rf $(VENV) var .pytest_cache
