# The two commands (see README.md):
#   make demo   runs the main job on the embedded default
#   make test   runs every test (installs nats-server and docker-registry first when missing)

.PHONY: demo test

demo:
	cargo build --release -p strata-coordinator
	./target/release/strata --help

test:
	.ci/install-deps
	cargo test --workspace
