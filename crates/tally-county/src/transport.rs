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

use crate::node::Input;
use crate::storage::INCARNATION_BYTES;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use std::sync::Arc;
use std::time::Duration;
use tally_rpc::pb::RaftBatch;
use tally_rpc::pb::raft_client::RaftClient;
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
/// The largest message a replica accepts on the raft transport: a snapshot of a large county
/// (every recorded sheet) travels as one message.
pub const RAFT_MESSAGE_BYTES_MAX: usize = 1 << 30;

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
        from: u64,
        to: u64,
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
    from: u64,
    to: u64,
    address: String,
    incarnation: [u8; INCARNATION_BYTES],
    dialer: Arc<dyn Dialer>,
    driver: mpsc::Sender<Input>,
    mut rx: mpsc::Receiver<Message>,
) {
    let batch = |messages: Vec<Vec<u8>>| RaftBatch {
        from,
        messages,
        incarnation: incarnation.to_vec(),
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
                        RaftClient::new(channel)
                            .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX)
                            .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX),
                    )
                }
                Err(e) => {
                    tracing::warn!(replica = to, %address, error = %e, "cannot dial replica");
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
        if !ordinary.is_empty() {
            let mut pending = Some(batch(encode(&ordinary)));
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
                            tracing::warn!(replica = to, %address, error = %status.message(), "refused by a peer");
                        } else {
                            tracing::debug!(replica = to, %address, error = %status, "raft stream ended");
                        }
                        let _ = driver.send(Input::Unreachable(to)).await;
                    }
                });
                stream = Some(tx);
            }
        }
        for snapshot in snapshots {
            let mut call = rpc.clone();
            let body = tokio_stream::iter([batch(encode(std::slice::from_ref(&snapshot)))]);
            let delivered = call.send(body).await.is_ok();
            tracing::info!(
                replica = to,
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

async fn report_lost(driver: &mpsc::Sender<Input>, to: u64, messages: &[Message]) {
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
