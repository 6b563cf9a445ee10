# Two commands do all set-up on a fresh machine:
#   make lab    venv + packages + the local model, then JupyterLab on the notebooks (loopback only)
#   make test   the same set-up, then every test (unit, integration, notebooks, browser)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.labkit-installed
ROOT   := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)
PORT   ?= 8888
# llama-cpp-python is built once, portably (no AMX path), by scripts/llama_wheel.sh; see there.
LLAMA_CPP_VERSION ?= 0.3.36

.PHONY: setup lab test check lint format typecheck bench browser redis phoenix clean clean-wheels

$(STAMP): pyproject.toml Makefile scripts/llama_wheel.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	bash scripts/llama_wheel.sh $(BIN) $(LLAMA_CPP_VERSION)
	$(BIN)/pip install --quiet -e ".[local,dev,redis,otel]"
	$(BIN)/python -m labkit.selfcheck
	touch $@

setup: $(STAMP)

# Debian's Chromium for the browser tests (Playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "install Debian's chromium (sudo apt-get install chromium) for the browser tests"; fi; }

# Debian's redis-server for the shared-cache tests (each test starts its own on a free port).
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else echo "install Debian's redis-server (sudo apt-get install redis-server) for the Redis cache tests"; fi; }

# Arize Phoenix, the OTLP receiver the trace-export tests read spans back from. Its own venv:
# it pulls in a server stack labkit never imports. Tests find it at $(PHOENIX)/bin/python.
PHOENIX ?= .venv-phoenix
PHOENIX_VERSION ?= >=12,<21
$(PHOENIX)/.installed:
	$(PYTHON) -m venv $(PHOENIX)
	$(PHOENIX)/bin/pip install --quiet --upgrade pip
	$(PHOENIX)/bin/pip install --quiet "arize-phoenix$(PHOENIX_VERSION)"
	touch $@

phoenix: $(PHOENIX)/.installed

lab: $(STAMP)
	@echo "JupyterLab on notebooks/ (loopback only): open the http://127.0.0.1:$(PORT)/lab/tree/01_quickstart.ipynb?token=... URL printed below; Ctrl-C to stop."
	$(BIN)/jupyter lab --no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port=$(PORT) $(ROOT) \
	  --ServerApp.root_dir=notebooks --LabApp.default_url=/lab/tree/01_quickstart.ipynb

test: $(STAMP) browser redis phoenix
	$(BIN)/python -m pytest -q -ra

lint:
	$(BIN)/ruff check labkit tests bench
	$(BIN)/ruff format --check labkit tests bench

format:
	$(BIN)/ruff format labkit tests bench
	$(BIN)/ruff check --fix labkit tests bench

typecheck:
	$(BIN)/mypy labkit

check: $(STAMP) lint typecheck test

bench: $(STAMP)
	@for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf .labkit .pytest_cache .mypy_cache

# The built llama-cpp-python wheels (kept by clean: rebuilding costs minutes).
clean-wheels:
	rm -rf .wheelhouse
