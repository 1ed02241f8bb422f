# The two entry points of a fresh checkout (see README.md).
.PHONY: run test install test-deps generate bench image

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

# The session-store and operator benchmarks need the test services
# (make test-deps installs them).
bench: install test-deps
	.venv/bin/python bench/relay.py
	.venv/bin/python bench/attacks.py
	.venv/bin/python bench/sessions.py
	.venv/bin/python bench/reconciling.py

# The container image, built without a registry (debootstrap base, buildah),
# as a docker-archive under $HOME/.cache/omnia/image (see docs/install.md).
image:
	scripts/build-image
