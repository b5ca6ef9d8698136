# The two commands of the README: `make run` and `make test` (both as root).
SHELL := /bin/sh
CARGO ?= cargo
CONFIG ?= /etc/corral/config.toml

.PHONY: run test deps deps-test build release lint unit-and-node-tests leak-check

CNI_CONF_DIR ?= /etc/cni/net.d

## make run: install host packages, build release, write the default config if none, install
## the default pod network if the CNI config dir is empty, serve.
run: deps release
	install -d -m 0755 $(dir $(CONFIG)) $(CNI_CONF_DIR)
	[ -f $(CONFIG) ] || ./target/release/corral config default > $(CONFIG)
	[ -n "$$(ls -A $(CNI_CONF_DIR))" ] || install -m 0644 deploy/cni/10-corral.conflist $(CNI_CONF_DIR)/
	exec ./target/release/corral serve --config $(CONFIG)

## make test: everything CI runs (formatting, lints, unit and node tests, leak check).
test: deps-test lint
	$(CARGO) build --workspace --bins --locked
	@status=0; \
	$(CARGO) test --workspace --locked --no-fail-fast || status=$$?; \
	./scripts/leak-check.sh || status=1; \
	exit $$status

deps:
	./scripts/install-deps.sh

deps-test:
	./scripts/install-deps.sh test

build:
	$(CARGO) build --workspace --locked

release:
	$(CARGO) build --release --locked -p corral
	./scripts/build-monitor.sh release

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
