# The Residual Stream: `make book` builds the site, `make test` runs every check.
# Both create the virtual environment on first use and reuse it afterwards.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed.stamp
BROWSER_STAMP := $(VENV)/.browser.stamp

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export PYTHONHASHSEED := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: book test bench lock clean env browser

book: $(STAMP)
	RS_BOOK_BUILD=1 $(BIN)/jupyter-book build . -W --keep-going
	@echo "Book built: _build/html/index.html"

test: $(STAMP) $(BROWSER_STAMP)
	$(BIN)/python -m pytest -v -rs

bench: $(STAMP)
	$(BIN)/python benchmarks/chapters.py
	$(BIN)/python benchmarks/loading.py
	$(BIN)/python benchmarks/lab.py

env: $(STAMP)

# The environment: rebuilt only when a requirement file changes.
$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip==26.3"
	$(BIN)/python -m pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

# Headless Chromium for the page tests (Debian packages).
$(BROWSER_STAMP):
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }
	touch $@

lock: $(STAMP)
	$(BIN)/python -m pip freeze --all --exclude-editable | sed -E 's/\+cpu$$//' | grep -v '^pip==' > constraints.txt

clean:
	rm -rf _build
