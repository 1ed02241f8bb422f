# The two entry points of a fresh checkout (see README.md).
.PHONY: run test install test-deps generate bench

run: install
	.venv/bin/omnia run examples/quickstart

test: install test-deps
	.venv/bin/python -m pytest

install:
	scripts/bootstrap

test-deps:
	scripts/install-test-deps

generate: install
	scripts/gen-protos
	scripts/gen-crds
	scripts/sync-chart-crds

bench: install
	.venv/bin/python bench/relay.py
	@for b in bench/sessions.py bench/reconciling.py; do [ ! -f $$b ] || .venv/bin/python $$b; done
