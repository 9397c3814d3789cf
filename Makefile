# The two commands (see README.md):
#   make demo   runs the main job on the embedded default: build, import the
#               OSV advisories, then SBOM and scan the demo inputs in deploy/demo/
#   make test   runs every test (installs nats-server, docker-registry and moto first when missing)

OSV ?= ../shared/testdata/osv/PyPI/all.zip ../shared/testdata/osv/Go/all.zip \
       ../shared/testdata/osv/crates-io/all.zip ../shared/testdata/osv/from-testdata
STRATA := $(or $(CARGO_TARGET_DIR),target)/release/strata
DEMO_DB := $(or $(CARGO_TARGET_DIR),target)/demo/vulndb

.PHONY: demo test

demo:
	cargo build --release -p strata-coordinator
	$(STRATA) db import --db $(DEMO_DB) $(OSV)
	$(STRATA) db status --db $(DEMO_DB)
	$(STRATA) sbom dir:deploy/demo/alpine-rootfs
	$(STRATA) scan --db $(DEMO_DB) dir:deploy/demo/alpine-rootfs
	$(STRATA) scan --db $(DEMO_DB) --sbom deploy/demo/app.cdx.json

test:
	.ci/install-deps
	cargo test --workspace
