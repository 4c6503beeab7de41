#!/usr/bin/env python3
"""Where a replica's CPU goes, by category. Diagnostics for bench/county-vs-etcd.sh.

Reads `perf script` output with call chains on stdin and gives each sample to the first category
(in the order below) one of whose patterns matches any frame of its stack; prints the shares.
Record the leader while a benchmark runs, for example:
    perf record -F 999 --call-graph dwarf,32768 -p LEADER_PID -o leader.data -- sleep 4
    perf script -i leader.data | python3 bench/diag/perf-categories.py
The release profile keeps debug info, so the frames have names.
"""
import sys, re, collections
CATS = [
  ("sheet signature check (verify_batch)", r"tally_proto::batch::verify_batch|tally_proto::envelope::verify"),
  ("countersignature verify", r"tally_proto::countersign::verify_countersignature"),
  ("sheet validation (check_sheet)", r"tally_core::validate::"),
  ("client cert parse per request (peer_identity)", r"tally_net::auth::peer_identity|tally_net::certs::identity_of"),
  ("forwarding: new channel+TLS handshake", r"leader_channel|TlsDialer|tally_net::tls::|TlsFiles::client_tls|rustls::client::hs|rustls::server::hs|ring_core.*ecp_nistz256|x25519|rustls::conn::ConnectionCommon.*process_new_packets"),
  ("fsync (fdatasync)", r"sys_fdatasync|sync_data"),
  ("redb persist (log append commit, excl. fsync)", r"DiskStorage::persist"),
  ("redb save_applied/set_commit (non-durable)", r"DiskStorage::save_applied|DiskStorage::set_commit"),
  ("raft storage reads (term/entries)", r"as raft::storage::Storage>"),
  ("state machine apply", r"tally_county::state::|apply_entries"),
  ("raft core", r"raft::raft|raft::raw_node|raft::"),
  ("driver status publish", r"tally_county::node::Driver::status|send_if_modified"),
  ("raft transport (links/RaftService)", r"tally_county::transport::|RaftService"),
  ("command encode/decode", r"tally_proto::county::|Command::encode|Command::decode"),
  ("ingest handler other", r"CountyService as tally_rpc::pb::county_server::County>::ingest"),
  ("TLS record layer (rustls)", r"rustls::"),
  ("HTTP/2 + gRPC framing (h2/hyper/tonic)", r"\bh2::|hyper::|tonic::"),
  ("tokio scheduler/io", r"tokio::"),
]
pats = [(n, re.compile(p)) for n, p in CATS]
counts = collections.Counter(); total = 0
stack = []; kernel_idle = 0
def flush():
    global total
    if not stack: return
    total += 1
    for n, p in pats:
        if any(p.search(f) for f in stack):
            counts[n] += 1; return
    leaf = stack[0]
    counts["other: " + ("kernel" if "[kernel" in leaf else "user")] += 1
for line in sys.stdin:
    line = line.rstrip("\n")
    if not line.strip():
        flush(); stack = []; continue
    if line.startswith((" ", "\t")):
        stack.append(line.strip())
    else:
        stack = []
flush()
for n, c in counts.most_common():
    print(f"{100*c/total:5.1f}%  {n}")
print(f"({total} samples)")
