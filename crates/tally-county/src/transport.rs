//! Raft messages between replicas over tonic: each replica keeps one client-streaming
//! `Raft.Send` call open to each peer and writes batches of messages into it; the receiving
//! side ([`crate::service::RaftService`]) checks the sender's certificate and hands the
//! messages to its driver.
//!
//! A link never blocks the driver: it has a bounded queue, and a message that does not fit is
//! dropped and the peer reported unreachable, which raft answers by probing and sending again.
//! A failed call is reported the same way and dialled again after a short pause. A snapshot
//! goes in a call of its own whose end says whether it arrived, and the driver is told
//! (`report_snapshot`) either way, so the peer never stays stuck in snapshot state.
//!
//! No message on the wire is larger than it must be: ordinary messages are batched up to
//! [`RAFT_BATCH_BYTES_SOFT`], and a snapshot, which holds every recorded sheet, travels in
//! pieces of [`SNAPSHOT_PIECE_BYTES`] that the receiver puts together again
//! ([`SnapshotAssembly`], at most [`SNAPSHOT_BYTES_MAX`]). The largest raft batch is then one
//! append of the largest ingest entry ([`RAFT_BATCH_BYTES_MAX`]).

use crate::ids::ReplicaId;
use crate::input::Input;
use crate::storage::INCARNATION_BYTES;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use std::sync::Arc;
use std::time::Duration;
use tally_rpc::pb::raft_client::RaftClient;
use tally_rpc::pb::{RaftBatch, SnapshotPiece};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, ClientTlsConfig};

/// Messages waiting for one peer before new ones are dropped.
pub const LINK_QUEUE: usize = 8 * 1024;
/// The most messages in one batch.
pub const BATCH_MESSAGES_MAX: usize = 256;
/// Batches queued on an open call before new ones are dropped.
pub const STREAM_BATCHES_QUEUED: usize = 64;
/// Pause before dialling a peer again after a failed call.
pub const REDIAL_PAUSE: Duration = Duration::from_millis(200);
/// A batch stops taking more messages once it holds this many bytes (raft-rs's own
/// `max_size_per_msg` for appends), so ordinary batches stay a few MiB.
pub const RAFT_BATCH_BYTES_SOFT: usize = crate::replica::MESSAGE_BYTES_MAX as usize;
/// Bytes a raft message adds to the entries it carries (term, index, commit, the entry's own
/// fields), with ample room.
pub const RAFT_MESSAGE_OVERHEAD_BYTES: usize = 1 << 20;
/// The largest batch a replica accepts on the raft transport. raft-rs fills an append up to
/// [`RAFT_BATCH_BYTES_SOFT`] but always sends at least one entry, so the largest legitimate
/// message is an append of one entry holding the largest ingest command (a batch of
/// `INGEST_SHEETS_MAX` sheets of the largest size), and a batch holding it holds nothing else.
/// Snapshots do not count: they travel in pieces.
pub const RAFT_BATCH_BYTES_MAX: usize =
    tally_proto::county::COUNTY_COMMAND_BYTES_MAX + RAFT_MESSAGE_OVERHEAD_BYTES;
/// The size of each piece of a snapshot on the wire.
pub const SNAPSHOT_PIECE_BYTES: usize = 1 << 20;
/// The largest snapshot message a replica puts together from pieces: the state image of a
/// large county (every recorded sheet, a few hundred bytes each, for up to a million units'
/// sheets and their corrections), with room. Only a replica's certificate gets this far.
pub const SNAPSHOT_BYTES_MAX: usize = 1 << 30;

/// Opens channels to other replicas (TLS over TCP, or a simulated network in tests).
pub trait Dialer: Send + Sync + 'static {
    /// A channel to the replica at `address` (`host:port`). Connecting may be lazy; errors
    /// surface on the first call.
    fn channel(&self, address: &str) -> Result<Channel, String>;
}

/// Dials peers over mutual TLS with this replica's certificate. The files are read and
/// checked once, when it is made; each dial only names the host it expects.
pub struct TlsDialer {
    tls: ClientTlsConfig,
}

impl TlsDialer {
    pub fn new(files: &tally_net::TlsFiles) -> Result<Self, tally_net::CertError> {
        let (tls, _) = files.client_tls("localhost")?;
        Ok(TlsDialer { tls })
    }
}

impl Dialer for TlsDialer {
    fn channel(&self, address: &str) -> Result<Channel, String> {
        let tls = self.tls.clone().domain_name(host_of(address));
        let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{address}"))
            .map_err(|e| format!("{address} is not an address: {e}"))?
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        Ok(endpoint.connect_lazy())
    }
}

/// The host part of `host:port` (without the brackets of an IPv6 address).
pub fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The sending side of the link to one peer.
pub(crate) struct PeerLink {
    queue: mpsc::Sender<Message>,
}

impl PeerLink {
    pub(crate) fn start(
        from: ReplicaId,
        to: ReplicaId,
        address: String,
        incarnation: [u8; INCARNATION_BYTES],
        dialer: Arc<dyn Dialer>,
        driver: mpsc::Sender<Input>,
    ) -> PeerLink {
        let (queue, rx) = mpsc::channel(LINK_QUEUE);
        tokio::spawn(run_link(from, to, address, incarnation, dialer, driver, rx));
        PeerLink { queue }
    }

    /// Queues a message; false if the queue is full or the link has ended.
    pub(crate) fn send(&self, message: Message) -> bool {
        self.queue.try_send(message).is_ok()
    }
}

fn encode(messages: &[Message]) -> Vec<Vec<u8>> {
    messages
        .iter()
        .map(|m| m.write_to_bytes().unwrap_or_default())
        .collect()
}

async fn run_link(
    from: ReplicaId,
    to: ReplicaId,
    address: String,
    incarnation: [u8; INCARNATION_BYTES],
    dialer: Arc<dyn Dialer>,
    driver: mpsc::Sender<Input>,
    mut rx: mpsc::Receiver<Message>,
) {
    let batch = |messages: Vec<Vec<u8>>| RaftBatch {
        from: from.get(),
        messages,
        incarnation: incarnation.to_vec(),
        snapshot: None,
    };
    let mut client: Option<RaftClient<Channel>> = None;
    // The open streaming call: its body's sender, and the task that drives the call.
    let mut stream: Option<mpsc::Sender<RaftBatch>> = None;
    let mut failed_at: Option<tokio::time::Instant> = None;
    while let Some(first) = rx.recv().await {
        let mut messages = vec![first];
        while messages.len() < BATCH_MESSAGES_MAX {
            match rx.try_recv() {
                Ok(m) => messages.push(m),
                Err(_) => break,
            }
        }
        if let Some(at) = failed_at
            && at.elapsed() < REDIAL_PAUSE
        {
            // Still pausing after a failure: these are dropped like lost packets.
            report_lost(&driver, to, &messages).await;
            continue;
        }
        if client.is_none() {
            match dialer.channel(&address) {
                Ok(channel) => {
                    client = Some(
                        RaftClient::new(channel).max_encoding_message_size(RAFT_BATCH_BYTES_MAX),
                    )
                }
                Err(e) => {
                    tracing::warn!(replica = to.get(), %address, error = %e, "cannot dial replica");
                    failed_at = Some(tokio::time::Instant::now());
                    report_lost(&driver, to, &messages).await;
                    continue;
                }
            }
        }
        let Some(rpc) = client.clone() else { continue };

        // Snapshots go alone, in a call whose answer says they arrived.
        let (snapshots, ordinary): (Vec<Message>, Vec<Message>) = messages
            .into_iter()
            .partition(|m| m.get_msg_type() == MessageType::MsgSnapshot);
        for messages in batches(encode(&ordinary)) {
            let mut pending = Some(batch(messages));
            if let Some(tx) = &stream {
                match tx.try_send(pending.take().expect("set above")) {
                    Ok(()) => {}
                    // The peer is slow: drop the batch like a lost packet; raft sends again.
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        let _ = driver.send(Input::Unreachable(to)).await;
                    }
                    // The call ended: open a new one with this batch.
                    Err(mpsc::error::TrySendError::Closed(b)) => {
                        stream = None;
                        pending = Some(b);
                    }
                }
            }
            if let Some(first) = pending {
                let (tx, body) = mpsc::channel(STREAM_BATCHES_QUEUED);
                let _ = tx.try_send(first);
                let mut call = rpc.clone();
                let driver = driver.clone();
                let address = address.clone();
                tokio::spawn(async move {
                    if let Err(status) = call.send(ReceiverStream::new(body)).await {
                        if status.code() == tonic::Code::FailedPrecondition
                            || status.code() == tonic::Code::PermissionDenied
                        {
                            // The peer refuses this replica: only the operator can mend it.
                            tracing::warn!(replica = to.get(), %address, error = %status.message(), "refused by a peer");
                        } else {
                            tracing::debug!(replica = to.get(), %address, error = %status, "raft stream ended");
                        }
                        let _ = driver.send(Input::Unreachable(to)).await;
                    }
                });
                stream = Some(tx);
            }
        }
        for snapshot in snapshots {
            let mut call = rpc.clone();
            let body = snapshot_pieces(
                from.get(),
                incarnation,
                snapshot.write_to_bytes().unwrap_or_default(),
            );
            let delivered = match call.send(body).await {
                Ok(_) => true,
                Err(status) => {
                    tracing::warn!(replica = to.get(), %address, error = %status, "a snapshot did not arrive");
                    false
                }
            };
            tracing::info!(
                replica = to.get(),
                index = snapshot.get_snapshot().get_metadata().index,
                delivered,
                "sent a snapshot"
            );
            let _ = driver
                .send(Input::SnapshotReport {
                    peer: to,
                    delivered,
                })
                .await;
            if !delivered {
                failed_at = Some(tokio::time::Instant::now());
                stream = None;
            }
        }
    }
}

/// Splits encoded messages into batches of about [`RAFT_BATCH_BYTES_SOFT`]: a batch takes
/// messages while it stays within it, and a message larger than that goes alone.
fn batches(messages: Vec<Vec<u8>>) -> Vec<Vec<Vec<u8>>> {
    let mut batches = Vec::new();
    let mut current: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0;
    for message in messages {
        if !current.is_empty() && bytes + message.len() > RAFT_BATCH_BYTES_SOFT {
            batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += message.len();
        current.push(message);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// The batches that carry one encoded snapshot message in pieces, made one at a time as the
/// call sends them.
fn snapshot_pieces(
    from: u64,
    incarnation: [u8; INCARNATION_BYTES],
    encoded: Vec<u8>,
) -> impl tokio_stream::Stream<Item = RaftBatch> + Send + 'static {
    let total_bytes = encoded.len() as u64;
    let pieces = encoded.len().div_ceil(SNAPSHOT_PIECE_BYTES).max(1);
    tokio_stream::iter((0..pieces).map(move |i| {
        let start = i * SNAPSHOT_PIECE_BYTES;
        let end = (start + SNAPSHOT_PIECE_BYTES).min(encoded.len());
        RaftBatch {
            from,
            messages: Vec::new(),
            incarnation: incarnation.to_vec(),
            snapshot: Some(SnapshotPiece {
                total_bytes,
                offset: start as u64,
                data: encoded[start..end].to_vec(),
            }),
        }
    }))
}

/// The receiving side of a snapshot in pieces: takes them in order and gives the whole
/// encoded message when the last one has arrived. It holds what the pieces carried and no
/// more, so a sender that declares a large total but stops sending costs nothing.
#[derive(Default)]
pub struct SnapshotAssembly {
    total_bytes: usize,
    bytes: Vec<u8>,
    started: bool,
}

impl SnapshotAssembly {
    /// Adds a piece; the whole message once it is complete.
    pub fn add(&mut self, piece: SnapshotPiece) -> Result<Option<Vec<u8>>, tonic::Status> {
        let total = usize::try_from(piece.total_bytes).unwrap_or(usize::MAX);
        if total > SNAPSHOT_BYTES_MAX {
            return Err(tonic::Status::resource_exhausted(format!(
                "the snapshot is {total} bytes, more than the {SNAPSHOT_BYTES_MAX} a replica takes; the county has outgrown SNAPSHOT_BYTES_MAX"
            )));
        }
        if !self.started {
            self.started = true;
            self.total_bytes = total;
        }
        if total != self.total_bytes
            || piece.offset != self.bytes.len() as u64
            || self.bytes.len() + piece.data.len() > total
        {
            return Err(tonic::Status::invalid_argument(format!(
                "a snapshot piece at offset {} of {} ({} bytes) does not follow the {} bytes received of {}",
                piece.offset,
                piece.total_bytes,
                piece.data.len(),
                self.bytes.len(),
                self.total_bytes
            )));
        }
        self.bytes.extend_from_slice(&piece.data);
        if self.bytes.len() < total {
            return Ok(None);
        }
        let whole = std::mem::take(&mut self.bytes);
        *self = SnapshotAssembly::default();
        Ok(Some(whole))
    }

    /// True while pieces of a snapshot have arrived and its last has not.
    pub fn unfinished(&self) -> bool {
        self.started
    }
}

async fn report_lost(driver: &mpsc::Sender<Input>, to: ReplicaId, messages: &[Message]) {
    for m in messages {
        if m.get_msg_type() == MessageType::MsgSnapshot {
            let _ = driver
                .send(Input::SnapshotReport {
                    peer: to,
                    delivered: false,
                })
                .await;
        }
    }
    let _ = driver.send(Input::Unreachable(to)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[test]
    fn batches_stay_within_the_soft_limit_and_a_large_message_goes_alone() {
        // Goal: ordinary batches stay a few MiB, and a message larger than that still goes
        // (alone), in order. Method: split messages of known sizes and look at the batches.
        let small = vec![0u8; RAFT_BATCH_BYTES_SOFT / 3];
        let large = vec![1u8; RAFT_BATCH_BYTES_SOFT + 1];
        let split = batches(vec![
            small.clone(),
            small.clone(),
            small.clone(),
            large.clone(),
            small.clone(),
        ]);
        let sizes: Vec<Vec<usize>> = split
            .iter()
            .map(|b| b.iter().map(Vec::len).collect())
            .collect();
        let s = small.len();
        assert_eq!(sizes, vec![vec![s, s, s], vec![large.len()], vec![s]]);
        assert!(batches(Vec::new()).is_empty());
    }

    #[tokio::test]
    async fn a_snapshot_travels_in_pieces_and_is_put_together_again() {
        // Goal: a snapshot larger than a piece arrives whole, every piece within the size a
        // raft batch may have; pieces out of order, a total over the maximum, and a call that
        // ends early are refused. Method: cut an encoded message into pieces and feed them.
        let encoded: Vec<u8> = (0..SNAPSHOT_PIECE_BYTES * 2 + 12345)
            .map(|i| (i % 251) as u8)
            .collect();
        let pieces: Vec<RaftBatch> = snapshot_pieces(7, [9; INCARNATION_BYTES], encoded.clone())
            .collect()
            .await;
        assert_eq!(pieces.len(), 3);
        let mut assembly = SnapshotAssembly::default();
        let mut whole = None;
        for batch in pieces.clone() {
            assert_eq!(batch.from, 7);
            assert!(batch.messages.is_empty());
            let piece = batch.snapshot.expect("a piece");
            assert!(piece.data.len() <= SNAPSHOT_PIECE_BYTES);
            assert!(whole.is_none(), "complete only after the last piece");
            whole = assembly.add(piece).expect("pieces in order");
        }
        assert_eq!(whole.as_deref(), Some(encoded.as_slice()));
        assert!(!assembly.unfinished(), "ready for the next snapshot");

        let mut skipped = SnapshotAssembly::default();
        skipped
            .add(pieces[0].snapshot.clone().unwrap())
            .expect("the first piece");
        assert!(skipped.unfinished());
        let status = skipped
            .add(pieces[2].snapshot.clone().unwrap())
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

        let status = SnapshotAssembly::default()
            .add(SnapshotPiece {
                total_bytes: SNAPSHOT_BYTES_MAX as u64 + 1,
                offset: 0,
                data: vec![0; 10],
            })
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    }
}
