# Two commands on a fresh machine:
#   make run    the main job on an embedded default (no credentials needed)
#   make test   the whole test suite (what CI runs through .ci/run)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SAMPLE := config/sample.yaml
DEMO_DIR ?= data/demo  # where `im-prober demo` keeps its pid file (its default --dir)

.PHONY: run outage report test lint bench clean system-deps

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test,demo]'
	touch $@

# The demo: a throwaway Synapse on 127.0.0.1, the real daemon probing it. Ctrl-C stops all.
run: $(BIN)/.installed
	$(BIN)/im-prober demo

# While `make run` is running: make the homeserver fail for the next whole minute.
outage:
	@pid=$$(cat $(DEMO_DIR)/demo.pid 2>/dev/null) && kill -0 "$$pid" 2>/dev/null || { \
	  echo "make outage: no demo is running (start it with 'make run' in another terminal)" >&2; \
	  exit 1; }; \
	kill -USR1 "$$pid" && echo "make outage: the homeserver fails for the next whole minute"

# The report of a bundled, generated service month (no daemon needed).
report: $(BIN)/.installed
	$(BIN)/im-prober ledger import -c $(SAMPLE) config/sample-minutes.csv.gz
	$(BIN)/im-prober report -c $(SAMPLE) --target demo --month 2026-10

lint: $(BIN)/.installed
	$(BIN)/ruff check prober tests bench
	$(BIN)/ruff format --check prober tests bench

# Debian's prometheus (prometheus, promtool) and prometheus-alertmanager (alertmanager,
# amtool), systemd (systemd-analyze): the tests run them against the daemon and deploy files.
# chromium: the status page tests drive Debian's headless Chromium (Playwright never downloads one).
# postgresql: the ledger tests start their own cluster; its binaries are not on PATH (and
# libpq-dev's pg_config answers without a server), so initdb is looked for where Debian puts it.
# prosody-modules: the xmpp rate-limit tests enable its mod_c2s_conn_throttle and mod_firewall
# (no binary: the module file is looked for where Debian puts it).
# sqlite3, openssl, git: the tamper, signature/timestamp and git-sink tests run the real tools.
SYSTEM_TOOLS := promtool:prometheus prometheus:prometheus amtool:prometheus-alertmanager \
	prometheus-alertmanager:prometheus-alertmanager systemd-analyze:systemd \
	prosody:prosody prosodyctl:prosody chromium:chromium sqlite3:sqlite3 openssl:openssl git:git
system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	test -f /usr/lib/prosody/modules/mod_c2s_conn_throttle/mod_c2s_conn_throttle.lua || \
	  missing="$$missing prosody-modules"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The real-time runs (a few real minutes each, mostly waiting) each keep to one worker
# (xdist_group), each on a worker of its own: more workers than cores, as they mostly sleep.
test: system-deps $(BIN)/.installed lint
	$(BIN)/pytest -n 13 --dist loadgroup --durations=25

# The comparison benchmarks also need Debian's prometheus-blackbox-exporter.
bench: system-deps $(BIN)/.installed
	@command -v prometheus-blackbox-exporter >/dev/null 2>&1 || { \
	  export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
	  apt-get install -y -qq --no-install-recommends prometheus-blackbox-exporter >/dev/null; }
	$(BIN)/python bench/ledger_bench.py
	$(BIN)/python bench/daemon_bench.py
	$(BIN)/python bench/blackbox_bench.py
	$(BIN)/python bench/accuracy_bench.py
	$(BIN)/python bench/detection_bench.py

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
