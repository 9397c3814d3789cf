# The two commands (see README.md):
#   make demo   runs the main job on the embedded default: build, import the
#               OSV advisories, then `strata serve` (coordinator, workers and an
#               in-process queue in one process) scans a small demo fleet that
#               shares base layers, and prints the fleet summary
#   make test   runs every test (installs nats-server, docker-registry and moto first when missing),
#               then each fuzz target for a few seconds on its seeds (fuzz/ci.sh; nightly, cargo-fuzz)

# The OSV records the demo matches, shipped in the repository (sources and
# licences in deploy/demo/osv/SOURCES.md); point OSV at other data (files,
# directories, all.zip, URLs) to use it instead.
OSV ?= deploy/demo/osv
STRATA := $(or $(CARGO_TARGET_DIR),target)/release/strata
DEMO := $(or $(CARGO_TARGET_DIR),target)/demo
DEMO_DB := $(DEMO)/vulndb

.PHONY: demo test

demo:
	cargo build --release -p strata-coordinator
	$(STRATA) db import --db $(DEMO_DB) $(OSV)
	$(STRATA) db status --db $(DEMO_DB)
	python3 deploy/demo/fleet.py $(DEMO)/fleet
	rm -rf $(DEMO)/serve
	$(STRATA) --log error serve --data-dir $(DEMO)/serve --db $(DEMO_DB) --watch $(DEMO)/fleet/images.txt \
		--exit-when-done --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0
	$(STRATA) scan --db $(DEMO_DB) --sbom deploy/demo/app.cdx.json

test:
	.ci/install-deps
	cargo test --workspace
	fuzz/ci.sh
