# xtyl backend. `make help` lists the targets. Everything installs itself on first use:
# uv (through pip, into .tools/ when it is not on PATH), then the locked venv (.venv/).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
RUN := $(UV) run --frozen --no-sync
PYTEST_ARGS ?=
DATA_DIR ?= .data

.PHONY: help install up test test-fast lint fmt typecheck check migrate user streams replay reembed bench env clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

.tools/bin/uv:
	@echo "uv not found on PATH: installing uv $(UV_VERSION) into .tools/ with pip"
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

.venv/.synced: uv.lock pyproject.toml libs/*/pyproject.toml services/*/pyproject.toml | $(UV)
	$(UV) sync --frozen --all-packages
	@touch $@

install: .venv/.synced ## install the locked environment (.venv)

up: .venv/.synced ## run the whole backend locally on embedded servers (Ctrl-C stops it)
	.venv/bin/python -m xtyl_devstack up --data-dir $(DATA_DIR)

test: .venv/.synced ## run every test against real embedded servers
	$(RUN) pytest $(PYTEST_ARGS)

lint: .venv/.synced ## ruff lint and format check
	$(RUN) ruff check .
	$(RUN) ruff format --check .

fmt: .venv/.synced ## format and autofix
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

typecheck: .venv/.synced ## pyright, strict
	$(RUN) pyright

check: lint typecheck test ## what CI runs

migrate: .venv/.synced ## apply every service's migrations (DATABASE_URL, or the running `make up` stack)
	@eval "$$($(RUN) python -m xtyl_devstack env --if-running 2>/dev/null)"; $(RUN) python -m xtyl_common.migrate

user: .venv/.synced ## sign a user up through the local Auth, print a token: make user EMAIL=ada@example.com
	@test -n "$(EMAIL)" || { echo "usage: make user EMAIL=someone@example.com [NAME='Full Name'] [PASSWORD=...]"; exit 2; }
	$(RUN) python -m xtyl_devstack user --data-dir $(DATA_DIR) --email "$(EMAIL)" --name "$(NAME)" $(if $(PASSWORD),--password "$(PASSWORD)")

streams: .venv/.synced ## show each Redis stream's length, groups, lag, pending, retrying, dead letters
	@eval "$$($(RUN) python -m xtyl_devstack env --if-running 2>/dev/null)"; $(RUN) xtyl-streams

# Where `make replay` re-creates events the outboxes no longer hold (see xtyl_common.events.replay).
REPLAY_SOURCES := --source xtyl_storage.adapters.event_sources:EVENT_SOURCES \
	--source xtyl_gateway.adapters.event_sources:EVENT_SOURCES

replay: .venv/.synced ## publish again what Redis lost: make replay SINCE=2h (or an ISO time) [DRY_RUN=1]
	@test -n "$(SINCE)" || { echo "usage: make replay SINCE=2h|2025-06-01T12:00Z [SCHEMA=xtyl_storage] [STREAM=files] [DRY_RUN=1]"; exit 2; }
	@eval "$$($(RUN) python -m xtyl_devstack env --if-running 2>/dev/null)"; $(RUN) python -m xtyl_common.events.replay --since "$(SINCE)" $(REPLAY_SOURCES) $(if $(SCHEMA),--schema $(SCHEMA)) $(if $(STREAM),--stream $(STREAM)) $(if $(DRY_RUN),--dry-run)

reembed: .venv/.synced ## rebuild vectors with the configured embedding model, then switch search to it
	@eval "$$($(RUN) python -m xtyl_devstack env --if-running 2>/dev/null)"; $(RUN) xtyl-rag-reembed

bench: .venv/.synced ## run the benchmarks under bench/ (prints figures beside baselines)
	@for b in bench/bench_*.py; do echo "== $$b"; $(RUN) python $$b || exit 1; done

env: .venv/.synced ## print the environment of the running `make up` stack (eval "$(make -s env)")
	@$(RUN) python -m xtyl_devstack env --data-dir $(DATA_DIR)

clean: ## remove the venv, caches and local data (PostgreSQL's files too, wherever up kept them)
	@loc=$$(cat $(DATA_DIR)/pg.location 2>/dev/null); \
	if [ -n "$$loc" ] && [ "$$(cat "$$loc/data-dir" 2>/dev/null)" = "$$(cd $(DATA_DIR) && pwd -P)" ]; then \
	  echo "rm -rf $$loc"; rm -rf "$$loc"; fi
	rm -rf .venv .tools .pytest_cache .ruff_cache $(DATA_DIR)

# --- deployment: images, compose on a real engine, manifest checks (docs/deploy.md, "Checks") ---
.PHONY: images deploy-check deploy-lint deploy-tools

images: ## build every deployable's image (no registry: offline base stand-ins first; OFFLINE_BASES=auto|1|0)
	docker/images.sh

deploy-tools: | $(UV) ## install the pinned deployment check tools into .tools/deploy (compose v2, checkov, ...)
	UV=$(UV) docker/tools.sh

deploy-check: .venv/.synced images deploy-tools ## run compose prod on a Docker engine against embedded servers, end to end
	.venv/bin/python compose/deploy_check.py

deploy-lint: deploy-tools ## render the k8s overlays, check schemas and policies, hadolint; prove a broken copy fails
	.tools/deploy/bin/python k8s/check.py --self-test
