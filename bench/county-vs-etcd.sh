#!/usr/bin/env bash
# The 3-replica county cluster on this machine, side by side with a 3-member etcd in the same
# run: sheets per second, commit latency p50/p99 and each replica's peak memory, at 1, 64 and 256
# concurrent submitters, one sheet per request (as one etcd put per request) and in township-sized
# batches. See bench/README.md for what is measured and how to read it.
#
# Usage: bench/county-vs-etcd.sh            (from anywhere; about 5 to 10 minutes)
# Knobs (environment):
#   BENCH_DIR        work folder (county, PKI, data dirs, results)    default /var/tmp/tally-bench
#   BENCH_CLIENTS    concurrent submitters                            default "1 64 256"
#   BENCH_BATCHES    sheets per request, one mode each                default "1 32"
#   BENCH_C1_LIMIT   sheets sent by a single submitter (it is slow)   default 1000
#   BENCH_PORT       first of three replica ports                     default 7461
#   BENCH_GEN        `tally gen` arguments for the county             default below (23,356 sheets)
#   BENCH_ETCD       0 to skip etcd                                   default 1
#   ETCD_BASELINE    the etcd script                                  default bench/etcd/etcd-baseline.sh
#   CARGO_TARGET_DIR where tally is built                             default <repo>/target
#   BENCH_PRELOAD    LD_PRELOAD for the replicas (diagnostics only; see README)
#   BENCH_TO_LEADER  1: send every request to the leader, no forwarding (diagnostics only)
#   BENCH_TALLY      a tally binary to run instead of building one (e.g. an older commit's, to
#                    compare two builds on the same machine in alternation)
#   BENCH_READERS    N: during each submit, N loops of `tally cluster results` (linearizable)
#                    against the leader; the line for the run says how many were answered and
#                    whether the leader changed (results must not hold up commits or heartbeats)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
work=${BENCH_DIR:-/var/tmp/tally-bench}
read -r -a clients <<<"${BENCH_CLIENTS:-1 64 256}"
read -r -a batches <<<"${BENCH_BATCHES:-1 32}"
c1_limit=${BENCH_C1_LIMIT:-1000}
port=${BENCH_PORT:-7461}
gen_args=${BENCH_GEN:---population 3000000 --townships 40 --voters-per-station 200 --seed 1 --no-scenarios}
run_etcd=${BENCH_ETCD:-1}
etcd_script=${ETCD_BASELINE:-$here/etcd/etcd-baseline.sh}
target=${CARGO_TARGET_DIR:-$repo/target}
tally=${BENCH_TALLY:-$target/release/tally}
readers=${BENCH_READERS:-0}

pids=()
stop_replicas() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap stop_replicas EXIT
trap 'exit 130' INT TERM

say() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
# A top-level number from `tally submit --format json` (pretty-printed, two-space indent).
jnum() { sed -n "s/^  \"$1\": \([-0-9.e+]*\),\{0,1\}\$/\1/p" "$2" | head -1; }
# Peak resident memory (VmHWM, kB) and CPU seconds (user+system) of a live process.
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$1/stat"; }

say "building tally (release) into $target"
if [ -n "${BENCH_TALLY:-}" ]; then
  say "using $tally (not built here)"
  code="the binary $tally"
else
  (cd "$repo" && CARGO_TARGET_DIR=$target cargo build --release -q -p tally)
  # What was built: the commit, and whether tracked files differed from it at build time.
  code="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"
  [ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ] && code="$code plus uncommitted changes"
fi

rm -rf "$work/county" "$work/pki" "$work/runs" "$work/results"
mkdir -p "$work/results"
say "generating the county: tally gen $gen_args"
# shellcheck disable=SC2086 # gen_args is a list of arguments
summary=$("$tally" gen --out "$work/county" $gen_args)
echo "$summary" >&2
total=$(sed -n 's/.* \([0-9][0-9]*\) signed sheets.*/\1/p' <<<"$summary")
bytes=$(stat -c %s "$work/county/sheets.sheets")
# Each envelope in a .sheets file is preceded by its length, a 2-byte varint for 128..16383 bytes.
avg=$(( (bytes - 2 * total) / total ))
say "$total signed sheets, $bytes bytes: $avg bytes per signed sheet on average (envelope: sheet + signature + key id)"
"$tally" certs --out "$work/pki" --definition "$work/county/election.toml" --hosts 127.0.0.1,localhost >/dev/null

servers="127.0.0.1:$port,127.0.0.1:$((port + 1)),127.0.0.1:$((port + 2))"

start_cluster() { # $1: data folder
  local dir=$1 i
  mkdir -p "$dir"
  for i in 1 2 3; do
    cat >"$dir/replica-$i.toml" <<EOF
cluster_id = "bench"
replica_id = $i
listen = "127.0.0.1:$((port + i - 1))"
advertise = "127.0.0.1:$((port + i - 1))"
data_dir = "data/replica-$i"
definition = "$work/county/election.toml"
initial_voters = [1, 2, 3]

[peers]
1 = "127.0.0.1:$port"
2 = "127.0.0.1:$((port + 1))"
3 = "127.0.0.1:$((port + 2))"

[tls]
ca = "$work/pki/ca.pem"
cert = "$work/pki/replica-$i.pem"
key = "$work/pki/replica-$i.key"

[raft]
tick_ms = 100
compact_after_entries = 10000
EOF
    LD_PRELOAD=${BENCH_PRELOAD:-} "$tally" county --config "$dir/replica-$i.toml" >"$dir/replica-$i.log" 2>&1 &
    pids+=($!)
  done
}

# Waits until all three replicas answer and name the same leader; prints its id.
wait_leader() { # $1: data folder
  local status leaders
  for _ in $(seq 1 150); do
    status=$("$tally" cluster status --servers "$servers" --pki "$work/pki" --format json 2>/dev/null || true)
    leaders=$(sed -n 's/^ *"leader": \([0-9][0-9]*\),$/\1/p' <<<"$status" | sort -u)
    if [ "$(grep -c '"role": "leader"' <<<"$status")" = 1 ] && [ "$(wc -w <<<"$leaders")" = 1 ] \
      && [ "$(grep -c '"leader": ' <<<"$status")" = 3 ]; then
      echo "$leaders"
      return 0
    fi
    sleep 0.2
  done
  echo "bench: no leader after 30 s; see $1/replica-*.log" >&2
  return 1
}

rows=()
declare -A tally_rate
for batch in "${batches[@]}"; do
  for c in "${clients[@]}"; do
    n=$total
    [ "$c" = 1 ] && [ "$c1_limit" -lt "$total" ] && n=$c1_limit
    dir=$work/runs/batch$batch-c$c
    start_cluster "$dir"
    leader=$(wait_leader "$dir")
    say "batch $batch, $c submitters, $n sheets: fresh cluster, leader is replica $leader"
    submit_to=$servers
    [ "${BENCH_TO_LEADER:-0}" = 1 ] && submit_to=127.0.0.1:$((port + leader - 1))
    reader_pids=()
    for r in $(seq 1 "$readers"); do
      ( answered=0
        while [ ! -e "$dir/submit.done" ]; do
          "$tally" cluster results --servers "127.0.0.1:$((port + leader - 1))" --pki "$work/pki" \
            >/dev/null 2>>"$dir/reader-$r.err" && answered=$((answered + 1))
        done
        echo "$answered" >"$dir/reader-$r.count" ) &
      reader_pids+=($!)
    done
    TIMEFORMAT='%U %S'
    { time "$tally" submit --servers "$submit_to" --pki "$work/pki" -d "$work/county/election.toml" \
        --keys "$work/county/township-keys.csv" --batch "$batch" --concurrency "$c" --limit "$n" \
        --format json "$work/county/sheets.sheets" >"$dir/submit.json" 2>"$dir/submit.err"; } 2>"$dir/submit.time" \
      || { say "submit failed (exit $?): $(tail -3 "$dir/submit.err")"; }
    if [ "$readers" -gt 0 ]; then
      touch "$dir/submit.done"
      wait "${reader_pids[@]}"
      after=$(wait_leader "$dir" || echo none)
      say "  readers: $(cat "$dir"/reader-*.count | paste -sd+ | bc) results answered during the submit; leader $leader before, $after after"
    fi
    hwm=() cpu=()
    for p in "${pids[@]}"; do hwm+=("$(( $(hwm_kb "$p") / 1024 ))"); cpu+=("$(cpu_s "$p")"); done
    stop_replicas
    rate=$(jnum sheets_per_second "$dir/submit.json"); p50=$(jnum latency_p50_ms "$dir/submit.json")
    p99=$(jnum latency_p99_ms "$dir/submit.json"); accepted=$(jnum accepted "$dir/submit.json")
    retries=$(jnum retries "$dir/submit.json"); client_cpu=$(awk '{printf "%.1f", $1 + $2}' "$dir/submit.time")
    [ "$accepted" = "$n" ] || say "WARNING: $accepted of $n sheets accepted (see $dir/submit.json)"
    say "  $(printf '%.0f' "$rate") sheets/s, p50 $(printf '%.1f' "$p50") ms, p99 $(printf '%.1f' "$p99") ms, retries $retries; peak RSS ${hwm[*]} MiB; CPU s replicas ${cpu[*]}, submit $client_cpu"
    tally_rate[$batch,$c]=$rate
    cp "$dir/submit.json" "$work/results/tally-batch$batch-c$c.json"
    rows+=("$batch|$c|$n|$leader|$rate|$p50|$p99|$retries|${hwm[0]} / ${hwm[1]} / ${hwm[2]}|${cpu[0]} / ${cpu[1]} / ${cpu[2]}|$client_cpu")
  done
done

# etcd: same submitter counts and the same number of requests, with values the size of the
# average signed sheet, and with 1 KiB values (the figure in replication-notes.md).
declare -A etcd_rate etcd_p50 etcd_p99 etcd1k_rate etcd1k_p99
if [ "$run_etcd" = 1 ]; then
  for size in "$avg" 1024; do
    # One etcd run (a fresh etcd cluster) for the single client and one for the rest, so each
    # client count does the same number of requests as tally's.
    groups=()
    for c in "${clients[@]}"; do [ "$c" = 1 ] && groups+=("1"); done
    rest=$(for c in "${clients[@]}"; do [ "$c" = 1 ] || printf '%s ' "$c"; done)
    [ -n "$rest" ] && groups+=("$rest")
    for group in "${groups[@]}"; do
      n=$total
      [ "$group" = 1 ] && [ "$c1_limit" -lt "$total" ] && n=$c1_limit
      say "etcd: $n puts of $size bytes, clients $group"
      # shellcheck disable=SC2086 # group is a list of client counts
      "$etcd_script" "$n" "$size" $group | tee -a "$work/results/etcd.txt" >"$work/results/etcd-last.txt"
      while read -r line; do
        echo "$line" >&2
        c=$(sed -n 's/.* clients=\([0-9]*\) .*/\1/p' <<<"$line")
        r=$(sed -n 's/.*puts_per_s=\([0-9.]*\).*/\1/p' <<<"$line")
        q50=$(sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p' <<<"$line")
        q99=$(sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p' <<<"$line")
        if [ "$size" = 1024 ]; then etcd1k_rate[$c]=$r; etcd1k_p99[$c]=$q99
        else etcd_rate[$c]=$r; etcd_p50[$c]=$q50; etcd_p99[$c]=$q99; fi
      done < <(grep '^etcd puts=' "$work/results/etcd-last.txt")
    done
  done
fi

table=$work/results/table.md
{
  echo "County: \`tally gen $gen_args\`: $total signed sheets, $avg bytes each on average."
  echo "Code: $code (at build time)."
  echo "Machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), all processes on it; $(date -u +%Y-%m-%dT%H:%MZ)."
  echo
  echo "| mode | clients | sheets | leader | tally sheets/s | p50 ms | p99 ms | retries | replica peak RSS MiB (1/2/3) | replica CPU s (1/2/3) | submit CPU s | etcd puts/s ($avg B) | etcd p50 ms | etcd p99 ms | ratio | etcd puts/s (1 KiB) | etcd p99 ms (1 KiB) |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"
  for row in "${rows[@]}"; do
    IFS='|' read -r batch c n leader rate p50 p99 retries hwm cpu ccpu <<<"$row"
    mode="batch $batch"; [ "$batch" = 1 ] && mode="1 sheet/request"
    er=${etcd_rate[$c]:-}; ratio=""
    [ -n "$er" ] && ratio=$(awk -v a="$rate" -v b="$er" 'BEGIN {printf "%.2f", a / b}')
    printf '| %s | %s | %s | %s | %.0f | %.1f | %.1f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
      "$mode" "$c" "$n" "$leader" "$rate" "$p50" "$p99" "$retries" "$hwm" "$cpu" "$ccpu" \
      "${er:--}" "${etcd_p50[$c]:--}" "${etcd_p99[$c]:--}" "${ratio:--}" "${etcd1k_rate[$c]:--}" "${etcd1k_p99[$c]:--}"
  done
  echo
  echo "tally latency is per request (a batch), first send to answer; etcd's is per put. ratio = tally sheets/s / etcd puts/s at the sheet-sized value."
  echo "leader: the replica that won the election; submitter k sends to replica (k mod 3)+1 and a follower forwards to the leader."
} >"$table"
cat "$table"
say "results in $work/results (table.md, tally-*.json, etcd.txt)"
