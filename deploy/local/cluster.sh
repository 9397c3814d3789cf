#!/usr/bin/env bash
# A Strata cluster on one machine: nats-server with JetStream, C
# coordinators (active/active, default 1) and N workers, each its own
# process, sharing one NATS and a file:// store. Everything lives under one
# directory (default target/strata-local) and stops on Ctrl-C or when any
# process dies.
#
#   deploy/local/cluster.sh [-c C] [-n N] [-d DIR] [--db FILE] [--strata PATH]
#
# Ports (override with the environment): NATS_PORT (4222), NATS_HTTP_PORT
# (8222), GRPC_PORT (7700: coordinator k's API on GRPC_PORT+k-1),
# METRICS_PORT (9100: coordinator k's /metrics on METRICS_PORT+k-1, workers
# on the N ports after those: METRICS_PORT+C ... METRICS_PORT+C+N-1).
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: deploy/local/cluster.sh [options]

  -c C            number of coordinators (default 1), all active: each
                  answers any call; pass all their URLs, comma-separated,
                  to a client's --server
  -n N            number of workers (default 3)
  -d DIR          state directory: JetStream data, store, logs
                  (default target/strata-local)
  --db FILE       vulnerability database for the coordinator (default
                  DIR/vulndb; built with `strata db update` if missing)
  --strata PATH   the strata binary (default target/release/strata)
  -h, --help      this text

nats-server (>= 2.10) is $NATS_SERVER, else .ci/.venv/bin/nats-server
(.ci/install-deps installs it), else the one on PATH.
USAGE
}

die() {
  echo "cluster.sh: $*" >&2
  exit 2
}

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

coordinators=1
workers=3
dir="$repo_root/target/strata-local"
db=""
strata="$repo_root/target/release/strata"

while [ "$#" -gt 0 ]; do
  case "$1" in
    -c) [ "$#" -ge 2 ] || die "-c needs a value"; coordinators=$2; shift 2 ;;
    -n) [ "$#" -ge 2 ] || die "-n needs a value"; workers=$2; shift 2 ;;
    -d) [ "$#" -ge 2 ] || die "-d needs a value"; dir=$2; shift 2 ;;
    --db) [ "$#" -ge 2 ] || die "--db needs a value"; db=$2; shift 2 ;;
    --strata) [ "$#" -ge 2 ] || die "--strata needs a value"; strata=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

case "$workers" in
  '' | *[!0-9]*) die "-n takes a number of workers, not '$workers'" ;;
esac
[ "$workers" -ge 1 ] || die "-n must be at least 1"
case "$coordinators" in
  '' | *[!0-9]*) die "-c takes a number of coordinators, not '$coordinators'" ;;
esac
[ "$coordinators" -ge 1 ] || die "-c must be at least 1"

nats_port=${NATS_PORT:-4222}
nats_http_port=${NATS_HTTP_PORT:-8222}
grpc_port=${GRPC_PORT:-7700}
metrics_port=${METRICS_PORT:-9100}

[ -x "$strata" ] || die "no strata binary at $strata (cargo build --release -p strata-coordinator, or --strata PATH)"

# Coordinator k is named coordinator-k and advertises its own gRPC address,
# when the binary knows those flags (older ones run one coordinator only).
if "$strata" coordinator --help 2>/dev/null | grep -q -- '--advertise-address'; then
  coordinator_flags=1
else
  coordinator_flags=0
  [ "$coordinators" -eq 1 ] || die "$strata has no --coordinator-id/--advertise-address: it cannot run $coordinators coordinators (use -c 1 or a newer build)"
fi

# --- nats-server -------------------------------------------------------------
nats_server=""
if [ -n "${NATS_SERVER:-}" ]; then
  nats_server=$NATS_SERVER
elif [ -x "$repo_root/.ci/.venv/bin/nats-server" ]; then
  nats_server="$repo_root/.ci/.venv/bin/nats-server"
elif command -v nats-server >/dev/null 2>&1; then
  nats_server=$(command -v nats-server)
else
  die "no nats-server: set NATS_SERVER, run .ci/install-deps, or put nats-server on PATH"
fi
[ -x "$nats_server" ] || die "NATS server $nats_server is not executable"

# Strata's key-value and work-queue use needs 2.10 or later (Debian ships 2.9).
nats_version=$("$nats_server" --version 2>&1 | sed -n 's/.*v\([0-9][0-9]*\)\.\([0-9][0-9]*\).*/\1 \2/p' | head -n 1)
if [ -n "$nats_version" ]; then
  read -r nats_major nats_minor <<<"$nats_version"
  if [ "$nats_major" -lt 2 ] || { [ "$nats_major" -eq 2 ] && [ "$nats_minor" -lt 10 ]; }; then
    die "$nats_server is v$nats_major.$nats_minor; Strata needs nats-server >= 2.10 (set NATS_SERVER or run .ci/install-deps)"
  fi
fi

# --- helpers -----------------------------------------------------------------
port_in_use() {
  # bash's /dev/tcp: succeeds when something listens on 127.0.0.1:$1.
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

http_ok() {
  if command -v curl >/dev/null 2>&1; then
    curl -fs -o /dev/null --max-time 2 "$1"
  else
    # No curl: settle for the port accepting connections.
    local hostport=${1#http://}
    hostport=${hostport%%/*}
    port_in_use "${hostport##*:}"
  fi
}

pids=()
names=()

start() {
  # start NAME COMMAND...: run in the background, output to DIR/logs/NAME.log.
  local name=$1
  shift
  "$@" >"$dir/logs/$name.log" 2>&1 &
  pids+=("$!")
  names+=("$name")
}

stopping=0
cleanup() {
  local rc=$?
  [ "$stopping" -eq 0 ] || return 0
  stopping=1
  trap - INT TERM
  [ "${#pids[@]}" -gt 0 ] || exit "$rc"
  echo "stopping..." >&2
  # Workers first (they finish or nak the jobs they hold), then the
  # coordinator, then NATS: reverse start order.
  local i j pid
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[$i]}
    kill -TERM "$pid" 2>/dev/null || continue
    # Up to 30 s each, then SIGKILL.
    for ((j = 0; j < 300; j++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "${names[$i]} did not stop in 30 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_until() {
  # wait_until WHAT SECONDS COMMAND...: poll until COMMAND succeeds, failing
  # early if a started process has died.
  local what=$1 secs=$2
  shift 2
  local t i
  for ((t = 0; t < secs * 10; t++)); do
    if "$@"; then
      return 0
    fi
    for i in "${!pids[@]}"; do
      if ! kill -0 "${pids[$i]}" 2>/dev/null; then
        echo "cluster.sh: ${names[$i]} exited while waiting for $what; last lines of $dir/logs/${names[$i]}.log:" >&2
        tail -n 20 "$dir/logs/${names[$i]}.log" >&2 || true
        exit 2
      fi
    done
    sleep 0.1
  done
  die "timed out after ${secs}s waiting for $what (see $dir/logs/)"
}

worker_metrics_port() {
  echo "$((metrics_port + coordinators + $1 - 1))"
}

coordinator_name() {
  # One coordinator keeps the log name it always had.
  if [ "$coordinators" -eq 1 ]; then echo coordinator; else echo "coordinator-$1"; fi
}

# --- state directory ---------------------------------------------------------
mkdir -p "$dir/jetstream" "$dir/store" "$dir/logs"
dir=$(cd "$dir" && pwd)

used=()
for p in "$nats_port" "$nats_http_port"; do
  if port_in_use "$p"; then used+=("$p"); fi
done
for ((k = 0; k < coordinators; k++)); do
  for p in "$((grpc_port + k))" "$((metrics_port + k))"; do
    if port_in_use "$p"; then used+=("$p"); fi
  done
done
for ((i = 1; i <= workers; i++)); do
  p=$(worker_metrics_port "$i")
  if port_in_use "$p"; then used+=("$p"); fi
done
[ "${#used[@]}" -eq 0 ] || die "port(s) already in use on 127.0.0.1: ${used[*]} (set NATS_PORT, NATS_HTTP_PORT, GRPC_PORT, METRICS_PORT)"

if [ -z "$db" ]; then
  db="$dir/vulndb"
  if [ ! -s "$db" ]; then
    echo "no vulnerability database at $db: fetching osv.dev exports (strata db update; needs internet)" >&2
    echo "  (offline: build one with \`strata db import --db FILE SRC...\` and pass --db FILE)" >&2
    "$strata" db update --db "$db" || die "strata db update failed; pass --db FILE"
  fi
fi
[ -s "$db" ] || die "no vulnerability database at $db"

export STRATA_LOG="${STRATA_LOG:-info}"

# --- start -------------------------------------------------------------------
nats_url="nats://127.0.0.1:$nats_port"
store="file://$dir/store"

start nats "$nats_server" -js -a 127.0.0.1 -p "$nats_port" -m "$nats_http_port" -sd "$dir/jetstream"
wait_until "nats-server" 20 http_ok "http://127.0.0.1:$nats_http_port/healthz"

servers=""
for ((k = 1; k <= coordinators; k++)); do
  port=$((grpc_port + k - 1))
  ident=()
  if [ "$coordinator_flags" -eq 1 ]; then
    ident=(--coordinator-id "coordinator-$k" --advertise-address "127.0.0.1:$port")
  fi
  start "$(coordinator_name "$k")" "$strata" coordinator \
    --nats "$nats_url" \
    --store "$store" \
    --listen "127.0.0.1:$port" \
    --metrics-listen "127.0.0.1:$((metrics_port + k - 1))" \
    --db "$db" \
    ${ident[@]+"${ident[@]}"}
  servers="${servers:+$servers,}http://127.0.0.1:$port"
done
for ((k = 1; k <= coordinators; k++)); do
  wait_until "$(coordinator_name "$k")" 120 http_ok "http://127.0.0.1:$((metrics_port + k - 1))/healthz"
done

for ((i = 1; i <= workers; i++)); do
  start "worker-$i" "$strata" worker \
    --nats "$nats_url" \
    --store "$store" \
    --worker-id "local-$i" \
    --metrics-listen "127.0.0.1:$(worker_metrics_port "$i")"
done
for ((i = 1; i <= workers; i++)); do
  wait_until "worker-$i" 30 http_ok "http://127.0.0.1:$(worker_metrics_port "$i")/healthz"
done

echo "Strata is running ($coordinators coordinator(s), $workers worker(s)); Ctrl-C stops everything."
echo
for ((k = 1; k <= coordinators; k++)); do
  printf '  %-18s gRPC http://127.0.0.1:%s   metrics http://127.0.0.1:%s/metrics\n' \
    "$(coordinator_name "$k")" "$((grpc_port + k - 1))" "$((metrics_port + k - 1))"
done
if [ "$coordinators" -gt 1 ]; then
  echo "                     any coordinator answers any call: clients may pass them all, comma-separated, to --server"
fi
logs="{nats,coordinator,worker-N}"
[ "$coordinators" -eq 1 ] || logs="{nats,coordinator-K,worker-N}"
cat <<EOF
                       $strata status --server $servers
                       $strata submit IMAGE --server $servers --wait
  workers            http://127.0.0.1:$(worker_metrics_port 1)/metrics ... http://127.0.0.1:$(worker_metrics_port "$workers")/metrics
  NATS               $nats_url   (monitoring http://127.0.0.1:$nats_http_port)
  store              $store
  database           $db
  logs               $dir/logs/$logs.log
EOF

# Stay in the foreground until Ctrl-C, or until any process exits.
while :; do
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "cluster.sh: ${names[$i]} exited; last lines of $dir/logs/${names[$i]}.log:" >&2
      tail -n 20 "$dir/logs/${names[$i]}.log" >&2 || true
      exit 1
    fi
  done
  sleep 1
done
