#!/usr/bin/env bash
# Measures a 3-member etcd 3.4 cluster (Debian's etcd-server) on 127.0.0.1 with the same shape of
# load as tally's own benchmarks: TOTAL puts of VALUE_BYTES each, at each client count given.
# Usage: etcd-baseline.sh [TOTAL] [VALUE_BYTES] [CLIENTS...]     e.g. etcd-baseline.sh 20000 1024 1 64 256
# Needs no root beyond apt-get download; everything lives under $ETCD_BASELINE_DIR.
set -euo pipefail
total=${1:-20000}; value_bytes=${2:-1024}; shift $(( $# >= 2 ? 2 : $# ))
clients=("$@"); [ ${#clients[@]} -gt 0 ] || clients=(1 64 256)
work=${ETCD_BASELINE_DIR:-/var/tmp/etcd-baseline}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"

etcd_bin=$(command -v etcd || true)
if [ -z "$etcd_bin" ]; then
  etcd_bin=$work/pkg/usr/bin/etcd
  if [ ! -x "$etcd_bin" ]; then
    (cd "$work" && { apt-get download etcd-server >/dev/null 2>&1 || { apt-get update -qq && apt-get download etcd-server >/dev/null; }; } \
      && dpkg -x etcd-server_*.deb pkg)
  fi
fi
[ -x "$etcd_bin" ] || { echo "etcd-baseline: could not get etcd (Debian package etcd-server)" >&2; exit 1; }

# Build the load generator (bench/etcd/etcdbench, its own workspace with its own Cargo.lock)
# outside the repository, so the clone stays clean.
rm -rf "$work/etcdbench-src" && cp -r "$here/etcdbench" "$work/etcdbench-src"
(cd "$work/etcdbench-src" && CARGO_TARGET_DIR=$work/target cargo build --release --locked -q)
bench=$work/target/release/etcdbench

data=$(mktemp -d "$work/cluster.XXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
cluster="m1=http://127.0.0.1:23801,m2=http://127.0.0.1:23802,m3=http://127.0.0.1:23803"
for i in 1 2 3; do
  "$etcd_bin" --name "m$i" --data-dir "$data/m$i" \
    --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
    --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token baseline \
    >"$data/m$i.log" 2>&1 &
  pids+=($!)
done
endpoints="http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793"
for _ in $(seq 1 100); do
  "$bench" "http://127.0.0.1:23791" 1 1 8 >/dev/null 2>&1 && break
  sleep 0.2
done
for c in "${clients[@]}"; do
  "$bench" "$endpoints" "$total" "$c" "$value_bytes"
done
