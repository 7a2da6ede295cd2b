# The two commands: `make run` (everything, until Ctrl-C) and `make test` (the whole suite).
# PYTHON: the interpreter for the venv; by default the fastest python3.11 on PATH (infra/python.sh).
PYTHON ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run run-ha drills test lint services install migrate clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(or $(PYTHON),$$(bash infra/python.sh)) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

services:
	bash infra/services.sh

migrate: install services
	$(BIN)/shardpay migrate

# A local stack's webhooks go to local receivers (the README's walk-through uses 127.0.0.1:9000), so unless the
# caller set SHARDPAY_WEBHOOK_ALLOW_PRIVATE, run allows loopback and private targets, and says so.
run: install services
	@if [ -z "$${SHARDPAY_WEBHOOK_ALLOW_PRIVATE+set}" ]; then \
		echo "make run: SHARDPAY_WEBHOOK_ALLOW_PRIVATE=true (webhooks may reach loopback and private addresses; set it to false to refuse them)"; \
	fi
	SHARDPAY_WEBHOOK_ALLOW_PRIVATE=$${SHARDPAY_WEBHOOK_ALLOW_PRIVATE-true} $(BIN)/shardpay run

# The high-availability topology (README, "High availability"): Patroni clusters on etcd, HAProxy, Redis under
# Sentinel, a RabbitMQ node of its own, two gateways; everything under SHARDPAY_HA_DIR (.ha), until Ctrl-C.
run-ha: install
	bash infra/ha/install.sh
	$(BIN)/shardpay ha up

# Every failover drill (shardpay drill all) against the HA topology, started for it unless it already runs.
drills: install
	bash infra/ha/install.sh
	bash infra/ha/drills.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install services lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache .ha

# The benchmark (loadtest/bench.py): its own stack on port 8300 and databases shardpay_bench_*, wrk load, audit,
# pgbench baseline, results in loadtest/results/. E.g. make bench ARGS="--scenario hot --duration 30".
.PHONY: bench
bench: install services
	$(BIN)/python -m loadtest.bench $(ARGS)

# The reconciliation benchmark (loadtest/reconcile_bench.py): 100,000 settlement lines against 100,000 records over
# 4 shards, reconciled by `shardpay reconcile FILE`, its time and peak memory; databases shardpay_rbench_*.
.PHONY: bench-reconcile
bench-reconcile: install services
	$(BIN)/python -m loadtest.reconcile_bench $(ARGS)
