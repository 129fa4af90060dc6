# mycel — make demo | make test | make docs | make interop | make bench | make proto | make typecheck
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test unit demo interop interop-peers system-deps bench proto typecheck fuzz soak natlab sim docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,proto,bench,docs]'
	# multiaddr pulls in trio-typing, whose stale trio-stubs would shadow trio's own inline types for mypy
	rm -rf $(VENV)/lib/python*/site-packages/trio-stubs
	touch $(STAMP)

venv: $(STAMP)

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) interop-peers system-deps
	$(BIN)/mypy
	$(BIN)/mypy --config-file interop/mypy.ini
	$(BIN)/python -m pytest -q

# redis-server for the transport-interop harness tests (Debian package; installed when we are root)
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server; \
	  else echo "redis-server is missing: sudo apt-get install redis-server" >&2; exit 1; fi; }
	@# iproute2 (ip netns) for the network-namespace lab (mycel.testing.netns)
	@command -v ip >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq iproute2; \
	  else echo "ip is missing: sudo apt-get install iproute2" >&2; exit 1; fi; }
	@# nftables (nft) for the NAT lab's routers (mycel.testing.natlab, tests/nat)
	@command -v nft >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq nftables; \
	  else echo "nft is missing: sudo apt-get install nftables" >&2; exit 1; fi; }
	@# miniupnpd (NAT-PMP/PCP gateway) on a lab router for tests/nat/test_portmap_miniupnpd.py
	@command -v miniupnpd >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq miniupnpd-nftables; \
	  else echo "miniupnpd is missing: sudo apt-get install miniupnpd-nftables" >&2; exit 1; fi; }
	@# chromium (headless) for the web view's browser test (tests/integration/test_webview_browser.py, via playwright)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium is missing: sudo apt-get install chromium" >&2; exit 1; fi; }

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# the real go / js / py-libp2p peers (pinned; stamps make this a ~0.05 s no-op once installed)
interop-peers:
	interop/install.sh

# mycel against every peer x direction x stack; table on stdout, JSON in interop/results/
interop: $(STAMP) interop-peers
	$(BIN)/python -m interop

# mycel side by side with raw TCP, js-, py- and go-libp2p on 127.0.0.1 (~10 min on 2 cores): one table on
# stdout; JSON, text and a PNG chart in benchmarks/results/. Options: make bench BENCH_ARGS="--bytes 2e9"
bench: $(STAMP) interop-peers
	$(BIN)/python benchmarks/compare.py $(BENCH_ARGS)

# structure-aware fuzzing of every decoder under atheris (the `fuzz` extra): 1,000,000 inputs per decoder
# by default, one table on stdout, JSON in fuzz/results/. Options: make fuzz FUZZ_ARGS="--inputs 10000 --only yamux"
fuzz: $(STAMP)
	$(BIN)/python -c "import atheris" 2>/dev/null || $(BIN)/pip install -q -e '.[fuzz]'
	$(BIN)/python fuzz/run.py $(FUZZ_ARGS)

# the mycel.sim evaluation (gossipsub on simulated hosts, virtual time): subnet-blob-msg at 1,000 nodes with
# IDONTWANT on/off, a 60 s partition, Sybil attacks with scoring on/off; progress on stderr, report.md + JSON +
# PNGs in benchmarks/sim/. Options: make sim SIM_ARGS="--nodes 300 --sybils 200"
sim: $(STAMP)
	$(BIN)/python -m mycel.sim evaluate --out benchmarks/sim $(SIM_ARGS)

# a churn soak against one node (clients connect over TCP and QUIC, echo, ping, gossip and leave, without
# pause): RSS slope, fds and tasks reported; make test runs 3 minutes of it. Options: make soak SOAK_MINUTES=60
SOAK_MINUTES ?= 30
soak: $(STAMP)
	$(BIN)/python -m tests.soak --minutes $(SOAK_MINUTES)

# the NAT lab's full figures (root): 50 DCUtR hole punches each over TCP and QUIC through endpoint-independent
# NATs, symmetric NATs, 5 % loss; JSON in tests/nat/results/. make test runs reduced counts (tests/nat).
natlab: $(STAMP) system-deps
	$(BIN)/python -m tests.nat $(NATLAB_ARGS)

# the documentation site (MkDocs Material + mkdocstrings, the docs extra) from docs/ into site/; --strict:
# a broken link, include or API reference fails the build. make test builds it too (tests/docs), and runs
# every Python snippet of the pages.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

clean:
	rm -rf $(VENV) build *.egg-info site
