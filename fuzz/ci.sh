#!/usr/bin/env bash
# CI smoke run of the fuzz targets: builds every target, then runs each for
# a few seconds from its committed seeds (fuzz/seeds/<target>/). Fails when
# any target crashes, hangs (-timeout) or runs out of memory; the input that
# did it is left in fuzz/artifacts/<target>/.
#
# Needs the nightly toolchain (`rustup toolchain install nightly`).
# Environment: FUZZ_SECONDS (default 5) per target; FUZZ_BUILD_FLAGS
# (default "--dev": unoptimised, so the build stays short; "" builds
# optimised with debug assertions, as the long runs in README.md do).
set -euo pipefail

cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-5}
build_flags=${FUZZ_BUILD_FLAGS---dev}

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

start=$(date +%s)
# shellcheck disable=SC2086 # the flags are words
cargo +nightly fuzz build -s none $build_flags
echo "ci.sh: built every target in $(($(date +%s) - start)) s"

failed=()
for target in $(cargo +nightly fuzz list); do
    # New inputs go to a scratch directory, never into the committed seeds.
    scratch=$(mktemp -d)
    # shellcheck disable=SC2086
    if ! cargo +nightly fuzz run -s none $build_flags "$target" "$scratch" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10; then
        failed+=("$target")
    fi
    rm -rf "$scratch"
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "ci.sh: failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "ci.sh: every target ran ${seconds} s without a crash, hang or OOM ($(($(date +%s) - start)) s in all)"
