# The README's two commands live here: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Debian packages the suite talks to for real: the broker, an independent (libmodbus) Modbus
# master, and the browser the portal tests drive (Playwright never downloads one).
SYSTEM_PACKAGES := mosquitto mbpoll chromium
RUN_DIR := run

.PHONY: test demo bench venv system-packages lint typecheck clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (found %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

system-packages:
	@missing=""; \
	for pkg in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if ! command -v apt-get >/dev/null; then \
	    echo "boilertwin: please install these system packages:$$missing" >&2; exit 1; \
	  elif [ "$$(id -u)" = 0 ]; then SUDO=""; \
	  elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else echo "boilertwin: missing system packages:$$missing -- run: sudo apt-get install -y$$missing" >&2; exit 1; fi; \
	  echo "installing system packages:$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

test: $(STAMP) system-packages
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n auto --durations=25

# The whole stack on this machine: 3 simulated boilers on ptys, an edge agent each, a local
# Mosquitto (production config, loopback), the cloud (SQLite) with its API; prints the API URL
# and demo logins, runs until Ctrl-C (DEMO_SECONDS=N stops it by itself). Then, in another
# terminal: .venv/bin/boilertwin demo --scenario lockout (or repair). See deploy/demo/run-demo.sh.
demo: $(STAMP) system-packages
	DEMO_DIR=$(RUN_DIR)/demo BOILERTWIN=$(BIN)/boilertwin PYTHON=$(BIN)/python \
	  bash deploy/demo/run-demo.sh

bench: $(STAMP)
	$(BIN)/python -m tests.bench.bench_rtu
	$(BIN)/python -m tests.bench.bench_day
	$(BIN)/python -m tests.bench.bench_cloud
	$(BIN)/python -m tests.bench.bench_fleet
	$(BIN)/python -m tests.bench.bench_faults
	$(BIN)/python -m tests.bench.bench_lifecycle
	$(BIN)/boilertwin sim evaluate --boilers 200 --days 90 --seed 0

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(RUN_DIR) .pytest_cache .hypothesis *.egg-info
