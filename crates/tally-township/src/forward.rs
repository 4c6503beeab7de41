//! The forwarder: one task that drains the outbox into the county, oldest sheets first.
//!
//! It sends the oldest sheets (up to `batch_max`) as one `County.Ingest`, countersigned with
//! the township key, to one county replica (any will do: a follower forwards to the leader).
//! It keeps talking to the replica that answered last, and moves on to the next one when a
//! call fails in a way another replica might not (UNAVAILABLE, DEADLINE_EXCEEDED, UNKNOWN,
//! CANCELLED, RESOURCE_EXHAUSTED, or no connection; a replica that does not answer an HTTP/2
//! ping within [`PING_ANSWER_TIMEOUT`] counts as no connection), pausing 100 ms, then twice that each time,
//! up to `retry_max`, with jitter so many townships do not retry in step. A refusal of the
//! whole batch (PERMISSION_DENIED, INVALID_ARGUMENT, UNAUTHENTICATED: a wrong key or
//! certificate) is logged as an error and kept as the picture's `last_error`; it is retried at
//! the longest pause, since only an operator can mend it.
//!
//! On an answer it records every sheet's county outcome and takes the batch out of the outbox
//! in one transaction. A crash between the county's commit and that transaction sends the
//! batch again after the restart, and the county answers DUPLICATE: counted once.

use crate::book::lock;
use crate::store::{CountyLink, CountyOutcome, CountyWrite, Digest, Note};
use crate::township::{Township, short, unix_ms};
use ed25519_dalek::SigningKey;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tally_rpc::pb;
use tally_rpc::pb::county_client::CountyClient;
use tally_rpc::pb::sheet_outcome::Kind;
use tokio::sync::watch;
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// How long one call to the county may take; the county answers a write it could not commit
/// within its own 10 s with DEADLINE_EXCEEDED, so this leaves it room to say so.
pub const CALL_DEADLINE: Duration = Duration::from_secs(10);
/// The first pause after a failed call; it doubles up to `retry_max`.
pub const RETRY_PAUSE_MIN: Duration = Duration::from_millis(100);
/// How long a connection attempt to a replica may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest ingest message: `batch_max` sheets of at most 64 KiB each, with room.
pub const INGEST_BYTES_MAX: usize = 512 << 20;
/// While a call is open, the township pings the replica's HTTP/2 connection after this long
/// without hearing from it...
pub const SILENCE_PING_AFTER: Duration = Duration::from_secs(1);
/// ...and gives the replica this long to answer the ping. A replica cut off by a partition or
/// on a hung machine answers nothing: the connection is closed, the call fails as transient
/// and the next replica is tried within some 3 s, instead of waiting out [`CALL_DEADLINE`]
/// while the county elects a new leader in one or two seconds. A replica that is merely busy
/// committing still answers pings (its HTTP/2 layer does, not the write).
pub const PING_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// How the forwarder reaches the county.
#[derive(Clone)]
pub struct CountyRoute {
    /// `host:port` of each replica.
    pub addresses: Vec<String>,
    /// The township's own client TLS (its certificate, the county CA).
    pub tls: ClientTlsConfig,
    /// The key the definition registers for the township, to countersign each batch.
    pub countersign_key: SigningKey,
}

/// What one attempt came to.
enum Attempt {
    /// The county answered every sheet.
    Answered(pb::IngestResponse),
    /// Worth sending again to the next replica after a pause.
    Transient(String),
    /// The county refused the whole batch; only an operator can mend it.
    Refused(String),
    /// The township's own disk failed: nothing is sent until its database opens again.
    Disk(crate::disk::Failure),
}

/// Drains the outbox until `stop` turns true.
pub(crate) async fn run(
    township: Arc<Township>,
    route: CountyRoute,
    mut stop: watch::Receiver<bool>,
) {
    if route.addresses.is_empty() {
        tracing::error!(township = %township.township, "no county replica addresses; the outbox is never forwarded");
        return;
    }
    let mut channels: HashMap<String, Channel> = HashMap::new();
    let mut current = 0usize;
    let mut pause = RETRY_PAUSE_MIN;
    let mut last_warned = None;
    let retry_max = township.settings.retry_max;
    loop {
        if *stop.borrow() {
            return;
        }
        let batch: Vec<(u64, Digest)> = {
            let book = lock(&township.book);
            book.outbox
                .iter()
                .take(township.settings.batch_max)
                .map(|(seq, digest)| (*seq, *digest))
                .collect()
        };
        if batch.is_empty() {
            tokio::select! {
                _ = township.wake.notified() => continue,
                _ = stop.changed() => return,
            }
        }
        let address = route.addresses[current % route.addresses.len()].clone();
        let sent_at = tokio::time::Instant::now();
        let attempt = tokio::select! {
            attempt = send(&township, &route, &mut channels, &address, &batch) => attempt,
            _ = stop.changed() => return,
        };
        if matches!(attempt, Attempt::Answered(_)) {
            township.metrics.forward_batch(sent_at.elapsed());
        }
        let wait = match attempt {
            Attempt::Answered(response) => {
                match record(&township, &address, &batch, response).await {
                    Ok(()) => {
                        pause = RETRY_PAUSE_MIN;
                        last_warned = None;
                        continue;
                    }
                    Err(error) => {
                        // The county has the batch; it is sent again once the answer can be
                        // stored (a failed disk: once the database opens again), and the
                        // county answers DUPLICATE.
                        tracing::error!(township = %township.township, %error, "the county answered but its answer could not be stored; the batch is sent again");
                        lock(&township.book).last_error = error;
                        let wait = pause;
                        pause = (pause * 2).min(retry_max);
                        wait
                    }
                }
            }
            Attempt::Transient(error) => {
                note_failure(&township, &address, error, true, &mut last_warned);
                current += 1;
                let wait = pause;
                pause = (pause * 2).min(retry_max);
                wait
            }
            Attempt::Refused(error) => {
                note_failure(&township, &address, error, false, &mut last_warned);
                current += 1;
                retry_max
            }
            Attempt::Disk(failure) => {
                // Said at error level when the store closed (crate::disk); the forwarder
                // only waits and tries again, keeping its replica.
                tracing::debug!(township = %township.township, "not forwarding: {}", failure.describe());
                let wait = pause;
                pause = (pause * 2).min(retry_max);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(jitter(wait)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// A pause between half of `pause` and all of it, at random, so townships that lost the
/// county together do not all call it again in the same instant.
fn jitter(pause: Duration) -> Duration {
    let half = pause / 2;
    let spread = half.as_millis() as u64;
    let extra = if spread == 0 {
        0
    } else {
        rand_core::RngCore::next_u64(&mut rand_core::OsRng) % (spread + 1)
    };
    half + Duration::from_millis(extra)
}

/// How often a county outage is said at warning level while it lasts; every attempt in
/// between is logged at debug level.
pub const OUTAGE_WARNING_INTERVAL: Duration = Duration::from_secs(60);

fn note_failure(
    township: &Township,
    address: &str,
    error: String,
    transient: bool,
    last_warned: &mut Option<tokio::time::Instant>,
) {
    township
        .metrics
        .forward_failure(if transient { "transient" } else { "refused" });
    let mut book = lock(&township.book);
    let message = format!("county replica {address}: {error}");
    let now = tokio::time::Instant::now();
    let due = book.county_reachable
        || last_warned.is_none_or(|at| now.duration_since(at) >= OUTAGE_WARNING_INTERVAL);
    if !transient {
        // A refusal needs an operator: said every time, at error level.
        tracing::error!(township = %township.township, replica = %address, %error, depth = book.outbox.len(), "the county refuses the township's batch; the outbox waits until an operator mends it (a wrong key or certificate, or another definition than the county's)");
    } else if due {
        tracing::warn!(township = %township.township, replica = %address, %error, depth = book.outbox.len(), "cannot forward to the county; the township keeps taking sheets and tries the next replica");
        *last_warned = Some(now);
    } else {
        tracing::debug!(township = %township.township, replica = %address, %error, "still cannot forward to the county");
    }
    book.county_reachable = false;
    book.last_error = message;
}

/// The host part of `host:port` (without an IPv6 address's brackets): the name the county
/// replica's certificate must carry. The same rule as `tally_county::transport::host_of`,
/// which this crate does not depend on.
pub fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

pub(crate) fn channel(tls: &ClientTlsConfig, address: &str) -> Result<Channel, String> {
    let tls = tls.clone().domain_name(host_of(address));
    Ok(Endpoint::from_shared(format!("https://{address}"))
        .map_err(|e| format!("{address} is not an address: {e}"))?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(SILENCE_PING_AFTER)
        .keep_alive_timeout(PING_ANSWER_TIMEOUT)
        .connect_lazy())
}

/// One attempt to hand the batch to the replica at `address`.
async fn send(
    township: &Township,
    route: &CountyRoute,
    channels: &mut HashMap<String, Channel>,
    address: &str,
    batch: &[(u64, Digest)],
) -> Attempt {
    let digests: Vec<Digest> = batch.iter().map(|(_, d)| *d).collect();
    let (disk, book) = (township.disk.clone(), township.book.clone());
    let read = tokio::task::spawn_blocking(move || {
        let store = disk.store(&book).map_err(Attempt::Disk)?;
        store
            .envelopes(&digests)
            .map_err(|e| match disk.failed(&store, &e) {
                Some(failure) => Attempt::Disk(failure),
                None => Attempt::Refused(format!("cannot read the outbox: {e}")),
            })
    });
    let sheets = match read.await {
        Ok(Ok(sheets)) => sheets,
        Ok(Err(attempt)) => return attempt,
        Err(e) => return Attempt::Transient(format!("reading the outbox did not finish: {e}")),
    };
    let countersignature = tally_proto::countersign(
        &township.definition().election,
        &township.township,
        &sheets,
        &route.countersign_key,
    );
    let message = pb::IngestRequest {
        township_id: township.township.to_string(),
        sheets: sheets.iter().map(tally_proto::SignedSheet::to_pb).collect(),
        countersignature: Some(countersignature.to_pb()),
        definition_digest: township.definition_digest.clone(),
    };
    let channel = match channels.get(address) {
        Some(channel) => channel.clone(),
        None => match channel(&route.tls, address) {
            Ok(channel) => {
                channels.insert(address.to_owned(), channel.clone());
                channel
            }
            Err(e) => return Attempt::Transient(e),
        },
    };
    let mut client = CountyClient::new(channel)
        .max_encoding_message_size(INGEST_BYTES_MAX)
        .max_decoding_message_size(INGEST_BYTES_MAX);
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_DEADLINE);
    // The transport's own deadline may not fire while the connection is still being made.
    let answer = match tokio::time::timeout(
        CALL_DEADLINE + Duration::from_secs(1),
        client.ingest(request),
    )
    .await
    {
        Ok(answer) => answer,
        Err(_) => {
            return Attempt::Transient(format!("no answer within {} s", CALL_DEADLINE.as_secs()));
        }
    };
    match answer {
        Ok(response) => {
            let response = response.into_inner();
            if response.outcomes.len() != batch.len() {
                return Attempt::Transient(format!(
                    "the county answered {} outcomes for {} sheets",
                    response.outcomes.len(),
                    batch.len()
                ));
            }
            for ((_, digest), outcome) in batch.iter().zip(&response.outcomes) {
                if outcome.digest != hex::encode(digest)
                    || Kind::try_from(outcome.kind).unwrap_or(Kind::Unspecified)
                        == Kind::Unspecified
                {
                    return Attempt::Transient(format!(
                        "the county's answer for sheet {} is not one (digest {:?}, kind {})",
                        short(digest),
                        outcome.digest,
                        outcome.kind
                    ));
                }
            }
            Attempt::Answered(response)
        }
        Err(status) => {
            let error = format!("{:?}: {}", status.code(), status.message());
            match status.code() {
                // FailedPrecondition: E213, this township's definition is not the county's.
                Code::PermissionDenied
                | Code::InvalidArgument
                | Code::Unauthenticated
                | Code::FailedPrecondition => Attempt::Refused(error),
                // Unavailable, DeadlineExceeded, Unknown, Cancelled, ResourceExhausted, and
                // anything unforeseen: another replica, or the same one later, may take it.
                _ => Attempt::Transient(error),
            }
        }
    }
}

/// Records the county's answer: each sheet's outcome, the batch out of the outbox, the notes
/// of sheets the county refused or found in conflict, in one transaction; then the book.
async fn record(
    township: &Arc<Township>,
    address: &str,
    batch: &[(u64, Digest)],
    response: pb::IngestResponse,
) -> Result<(), String> {
    let now = unix_ms();
    let mut write = CountyWrite::default();
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    {
        let mut book = lock(&township.book);
        for ((seq, digest), outcome) in batch.iter().zip(&response.outcomes) {
            let kind = Kind::try_from(outcome.kind).unwrap_or(Kind::Unspecified);
            let name = match kind {
                Kind::Accepted => "accepted",
                Kind::Duplicate => "duplicate",
                Kind::Superseded => "superseded",
                Kind::Conflict => "conflict",
                Kind::Refused | Kind::Unspecified => "refused",
            };
            *counts.entry(name).or_default() += 1;
            if matches!(kind, Kind::Conflict | Kind::Refused) {
                let record = book.records.get(digest);
                let code = if outcome.code.is_empty() {
                    name.to_owned()
                } else {
                    outcome.code.clone()
                };
                tracing::warn!(
                    township = %township.township,
                    replica = %address,
                    sheet = %short(digest),
                    unit = record.map_or("", |r| r.unit.as_str()),
                    contest = record.map_or("", |r| r.contest.as_str()),
                    round = record.map_or(0, |r| r.round),
                    version = record.map_or(0, |r| r.version),
                    %code,
                    "the county did not count a sheet: {}",
                    outcome.message
                );
                let note = Note {
                    unit: record.map(|r| r.unit.clone()).unwrap_or_default(),
                    contest: record.map(|r| r.contest.clone()).unwrap_or_default(),
                    round: record.map_or(0, |r| r.round),
                    version: record.map_or(0, |r| r.version),
                    digest: hex::encode(digest),
                    refused_by: "county".to_owned(),
                    code,
                    messages: vec![outcome.message.clone()],
                    received_unix_ms: now,
                    // A stored sheet's unit is verified and of this township.
                    from: Some(record.map(|r| r.unit.clone()).unwrap_or_default()),
                };
                let n = book.take_note_number();
                write.notes.push((n, note));
            }
            write.answered.push((
                *seq,
                *digest,
                CountyOutcome {
                    kind: name.to_owned(),
                    code: outcome.code.clone(),
                    message: outcome.message.clone(),
                    unix_ms: now,
                },
            ));
        }
        let mut link = book.link.clone();
        link.last_success_unix_ms = now;
        link.leader_id = response.leader_id;
        // A batch whose every sheet was refused records nothing at the county.
        if response.log_index > 0 {
            link.log_index = response.log_index;
            link.chain_head = hex::encode(&response.chain_head);
        }
        write.link = link;
        write.next_note = book.next_note;
    }
    let (disk, book) = (township.disk.clone(), township.book.clone());
    let write = tokio::task::spawn_blocking(move || {
        let store = disk.store(&book).map_err(|failure| failure.describe())?;
        store
            .record_county(&write)
            .map(|()| {
                disk.wrote(&store);
                write
            })
            .map_err(|e| match disk.failed(&store, &e) {
                Some(failure) => failure.describe(),
                None => format!("cannot record the county's answer: {e}"),
            })
    })
    .await
    .map_err(|e| format!("recording the county's answer did not finish: {e}"))??;
    let mut book = lock(&township.book);
    for (seq, digest, outcome) in write.answered {
        book.outbox.remove(&seq);
        if let Some(record) = book.records.get_mut(&digest)
            && record.county.replace(outcome).is_none()
        {
            book.forwarded += 1;
        }
    }
    for (number, note) in write.notes {
        book.push_note(number, note);
    }
    for (outcome, n) in &counts {
        township.metrics.county_outcome(outcome, *n as u64);
    }
    let link: CountyLink = write.link;
    book.link = link;
    book.county_reachable = true;
    book.last_error.clear();
    tracing::info!(
        township = %township.township,
        replica = %address,
        leader = response.leader_id,
        log_index = response.log_index,
        sheets = batch.len(),
        accepted = counts.get("accepted").copied().unwrap_or(0),
        duplicate = counts.get("duplicate").copied().unwrap_or(0),
        superseded = counts.get("superseded").copied().unwrap_or(0),
        conflict = counts.get("conflict").copied().unwrap_or(0),
        refused = counts.get("refused").copied().unwrap_or(0),
        depth = book.outbox.len(),
        "forwarded a batch to the county"
    );
    Ok(())
}
