//! What the driver is asked to do: the one channel into the thread that owns raft. The
//! services, the transport and operators send an [`Input`]; only the driver (node.rs) reads it.

use crate::command::Command;
use crate::error::WriteError;
use crate::ids::{LogIndex, ReplicaId};
use crate::replica::{AppliedProposal, Replica};
use raft::eraftpb::{ConfChangeType, Message};
use tokio::sync::oneshot;

/// What the driver is asked to do.
pub(crate) enum Input {
    Propose {
        command: Command,
        reply: oneshot::Sender<Result<AppliedProposal, WriteError>>,
    },
    Raft(Vec<Message>),
    Read {
        reply: oneshot::Sender<Result<LogIndex, WriteError>>,
    },
    Membership {
        change: ConfChangeType,
        node: ReplicaId,
        context: Vec<u8>,
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    Transfer {
        to: ReplicaId,
    },
    Unreachable(ReplicaId),
    SnapshotReport {
        peer: ReplicaId,
        delivered: bool,
    },
    Query(Box<dyn FnOnce(&Replica) + Send>),
}
