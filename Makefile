# mycel — make demo | make test | make interop | make bench | make proto | make typecheck
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test unit demo interop interop-peers bench proto typecheck clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,quic,proto]'
	# multiaddr pulls in trio-typing, whose stale trio-stubs would shadow trio's own inline types for mypy
	rm -rf $(VENV)/lib/python*/site-packages/trio-stubs
	touch $(STAMP)

venv: $(STAMP)

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP)
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

demo: $(STAMP)
	$(BIN)/python examples/demo.py

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

clean:
	rm -rf $(VENV) build *.egg-info
