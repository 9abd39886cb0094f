#!/usr/bin/env bash
# Allowed requests per second through Envoy with ext_authz asking authd, against the same
# Envoy proxying without it (the /public/ route of deploy/envoy/ext-authz.yaml), in one
# run, rounds alternating. Needs a release build, envoy, h2load and buf on PATH.
#
#   bash bench/ext-authz.sh [REQUESTS_PER_ROUND] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-100000}
rounds=${2:-3}
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
authd_port=$(free_port); upstream_port=$(free_port); envoy_port=$(free_port)

AUTHD_LISTEN=127.0.0.1:$authd_port AUTHD_DATABASE_URL="sqlite://$work/authd.db?mode=rwc" \
  AUTHD_LOG=warn ./target/release/authd serve & pids+=($!)
sed "s/port_value: 8000/port_value: $upstream_port/" bench/envoy/upstream.yaml > "$work/upstream.yaml"
sed -e "s/address: 0.0.0.0/address: 127.0.0.1/" -e "s/port_value: 8080/port_value: $envoy_port/" \
  -e "s/address: authd/address: 127.0.0.1/" -e "s/port_value: 50051/port_value: $authd_port/" \
  -e "s/address: upstream/address: 127.0.0.1/" -e "s/port_value: 8000/port_value: $upstream_port/" \
  deploy/envoy/ext-authz.yaml > "$work/envoy.yaml"
envoy -c "$work/upstream.yaml" --disable-hot-restart --concurrency 1 -l error & pids+=($!)
envoy -c "$work/envoy.yaml" --disable-hot-restart --concurrency 1 -l error & pids+=($!)
for _ in $(seq 50); do
  ./target/release/authd healthcheck --listen "127.0.0.1:$authd_port" >/dev/null 2>&1 && break
  sleep 0.2
done
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$envoy_port/public/" >/dev/null && break; sleep 0.2; done

token=$(buf curl --protocol grpc --http2-prior-knowledge \
  -d '{"email":"bench@example.com","password":"correct horse battery staple","name":"Bench"}' \
  "http://127.0.0.1:$authd_port/auth.v1.AuthService/Register" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"]["accessToken"])')

rps() { # rps PATH: requests/s of h2load, 8 connections x 16 streams, all answered 200
  local out
  out=$(h2load -n "$requests" -c 8 -m 16 -H "authorization: Bearer $token" "http://127.0.0.1:$envoy_port$1")
  echo "$out" | grep -q "status codes: $requests 2xx" || { echo "$out" >&2; exit 1; }
  echo "$out" | awk '/^finished in/ {gsub(",", "", $4); print $4}'
}
echo "round  ext_authz req/s  no ext_authz req/s  ratio"
for round in $(seq "$rounds"); do
  with=$(rps /orders); without=$(rps /public/orders)
  printf "%5d  %15.0f  %18.0f  %5.2f\n" "$round" "$with" "$without" "$(python3 -c "print($with/$without)")"
done
