# Handshake: `make run` starts everything on the embedded stack; `make test` runs every test that needs only
# Python; `make test-deploy` (Debian packages: deploy/install-packages.sh) builds and runs the images, the gateway
# and the manifest validators.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PKGS   := shared devstack services/order services/payment services/inventory services/webhook-ingest services/console
DEPS   := constraints.txt requirements-dev.txt $(addsuffix /pyproject.toml,$(PKGS))

.PHONY: install run test test-unit lint format typecheck test-deploy images bench bench-ack schemas clean

$(STAMP): $(DEPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -r requirements-dev.txt $(addprefix -e ,$(PKGS))
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m tools.run

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the pure tests (domain rules, state machines, settings, pages): seconds, no PostgreSQL, broker or emulator
test-unit: install
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# rewrites files: import order, the lint fixes ruff can make safely, and the layout
format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install
	$(BIN)/mypy

# the four service images with podman or docker; BASE_IMAGE=local builds the base from Debian packages
images: install
	deploy/images/build.sh

test-deploy: install
	$(BIN)/python -m pip install -q -c constraints.txt -r deploy/requirements-deploy.txt
	BASE_IMAGE=$${BASE_IMAGE:-local} $(BIN)/python -m pytest deploy/tests services/console/browser_tests $(PYTEST_ARGS)

# the reference monolith the bench measures against; when it is missing the bench measures Handshake alone
BENCH_REFERENCE ?= ../shared/bench/baseline_monolith.py

bench: install
	$(BIN)/python -m tools.bench --reference $(BENCH_REFERENCE) $(BENCH_ARGS)

# webhook acknowledgement latency: signed events against a webhook-ingest it starts on its own embedded stack
BENCH_ACK_ARGS ?= --self-host -n 2000 -c 16

bench-ack: install
	$(BIN)/python -m tools.bench_webhook_ack $(BENCH_ACK_ARGS)

schemas: install
	$(BIN)/python -m handshake_shared.events.schemas --write

clean:
	rm -rf .data
