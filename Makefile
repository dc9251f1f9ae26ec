# Handshake: `make run` starts everything on the embedded stack; `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PKGS   := shared devstack services/order services/payment services/inventory services/webhook-ingest
DEPS   := constraints.txt requirements-dev.txt $(addsuffix /pyproject.toml,$(PKGS))

.PHONY: install run test bench schemas clean

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

bench: install
	$(BIN)/python -m tools.bench $(BENCH_ARGS)

schemas: install
	$(BIN)/python -m handshake_shared.events.schemas --write

clean:
	rm -rf .data
