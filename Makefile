# The two entry points of a fresh checkout (see README.md).
.PHONY: run test install install-dev test-deps generate bench bench-profile image

# Running needs Omnia's runtime dependencies and the embedded model only;
# the test tools (pytest, Playwright, linters, the test services) come with
# make test.
run: install
	.venv/bin/omnia run examples/quickstart

test: install-dev test-deps
	.venv/bin/python -m pytest

install:
	scripts/bootstrap

install-dev:
	scripts/bootstrap --dev

test-deps:
	scripts/install-test-deps

generate: install-dev
	scripts/gen-protos
	scripts/gen-crds
	scripts/sync-chart-crds

# The session-store and operator benchmarks need the test services
# (make test-deps installs them).
bench: install-dev test-deps
	.venv/bin/python bench/relay.py
	.venv/bin/python bench/attacks.py
	.venv/bin/python bench/sessions.py
	.venv/bin/python bench/reconciling.py

# Where the facade's and the runtime's CPU goes under relay load (cProfile).
bench-profile: install-dev
	.venv/bin/python bench/profile_relay.py

# The container image, built without a registry (debootstrap base, buildah),
# as a docker-archive under $HOME/.cache/omnia/image (see docs/install.md).
image:
	scripts/build-image
