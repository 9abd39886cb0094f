#!/usr/bin/env bash
# The footprint of a built authd (BENCHMARKS.md, "Footprint"): its size, the time from exec
# to serving on an empty and on an existing SQLite database, and its resident memory once
# idle. The time runs from just before exec to the timestamp of the "authd listening" log
# line, written once the health service says SERVING and the port accepts calls.
# Usage: bench/footprint.sh [BINARY] [RUNS]   (default target/release/authd, 5 runs)
set -euo pipefail
bin=$(realpath "${1:-target/release/authd}")
runs=${2:-5}
dir=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT

echo "binary: $(stat -c %s "$bin") bytes"

# Starts authd on $dir/authd.db and waits until it listens; sets took (ms from exec).
start() {
  local port=$((20000 + RANDOM % 20000)) started
  started=$(date +%s%N)
  AUTHD_DATABASE_URL="sqlite://$dir/authd.db?mode=rwc" AUTHD_LISTEN=127.0.0.1:$port \
    "$bin" serve >"$dir/log" 2>&1 &
  pid=$!
  until grep -q "authd listening" "$dir/log" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$dir/log" >&2; exit 1; }
    sleep 0.01
  done
  local at
  at=$(grep "authd listening" "$dir/log" | grep -o '[0-9-]*T[0-9:.]*Z')
  took=$(( ($(date -d "$at" +%s%N) - started) / 1000000 ))
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

for kind in empty existing; do
  times=()
  for _ in $(seq "$runs"); do
    [ "$kind" = empty ] && rm -f "$dir"/authd.db*
    start
    times+=("$took")
    stop
  done
  echo "exec to serving, $kind database (ms, $runs runs): ${times[*]}"
done

start
sleep 2
echo "idle RSS after start: $(awk '/VmRSS/ {print $2, $3}' "/proc/$pid/status")"
stop
