//! The tally.v1 services of one replica (`proto/tally/v1/service.proto`) over its
//! [`NodeHandle`](crate::node::NodeHandle): `County` (ingest, results, status), `Admin` (membership, leadership) and
//! `Raft` (the replicas' transport).
//!
//! Every handler first establishes who is calling from the certificate the TLS handshake
//! verified ([`tally_net::peer_identity`]) and what that role may do. Writes go to the leader:
//! a follower forwards an ingest or an admin call to the leader it knows (once; a forwarded
//! call is never forwarded again) and says so when it knows none. [`crate::forward`] bounds
//! the wait and follows a change of leader.

use crate::command::{Command, INGEST_SHEETS_MAX};
use crate::error::WriteError;
use crate::error::unavailable;
use crate::forward::{self, Routed, WRITE_DEADLINE};
use crate::ids::{LogIndex, ReplicaId};
use crate::node::NodeStatus;
use crate::reads::ResultsAt;
use crate::shared::Shared;
use crate::shared::ids_on_the_wire;
use crate::state::SheetOutcome;
use protobuf::Message as _;
use raft::eraftpb::ConfChangeType;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tally_core::definition::Definition;
use tally_core::ids::TownshipId;
use tally_core::validate;
use tally_net::{Identity, Role, peer_identity, require};
use tally_proto::SignedSheet;
use tally_rpc::pb;
use tally_rpc::pb::admin_client::AdminClient;
use tally_rpc::pb::county_client::CountyClient;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// How long a linearizable read waits for the leader to confirm its index.
pub const READ_DEADLINE: Duration = Duration::from_secs(3);
/// How long an admin call waits to see its change applied.
pub const ADMIN_DEADLINE: Duration = Duration::from_secs(10);
/// Batches of at most this many sheets are verified on the calling task.
pub const CHECK_IN_PLACE_MAX: usize = 16;
/// Default for `ReplicaRequest.max_lag` when promoting a learner.
pub const PROMOTE_MAX_LAG: u64 = 100;
/// The most chain records one `Export` chunk carries: some 500 KB of ordinary sheets, well
/// under the 4 MB a default gRPC client accepts.
pub const EXPORT_RECORDS_PER_CHUNK: usize = 1024;
/// Export chunks encoded ahead of a slow reader.
const EXPORT_CHUNKS_IN_FLIGHT: usize = 4;
/// What an export says about countersignatures (see `ExportHeader.countersignatures`).
pub const EXPORT_COUNTERSIGNATURES: &str = "in the chain: the first sheet each ingest recorded keeps the countersigned batch that brought it (every sheet's digest and the township's countersignature), linked into the chain with it";

/// Waits for `future` up to `deadline`, or says what to do when it does not end in time.
async fn within<T>(
    deadline: Duration,
    what: &str,
    future: impl std::future::Future<Output = Result<T, WriteError>>,
) -> Result<T, Status> {
    match tokio::time::timeout(deadline, future).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "{what} did not complete within {} s (a majority of replicas may be unreachable); its outcome is unknown: send it again, and a sheet already recorded is answered as a duplicate",
            deadline.as_secs()
        ))),
    }
}

// ---------------------------------------------------------------- County

pub struct CountyService {
    pub shared: Arc<Shared>,
}

fn refused(code: &str, message: String, digest: [u8; 32]) -> pb::SheetOutcome {
    let message = without_code(code, &message).to_owned();
    pb::SheetOutcome {
        kind: pb::sheet_outcome::Kind::Refused as i32,
        code: code.to_owned(),
        message,
        warnings: Vec::new(),
        digest: hex::encode(digest),
    }
}

/// A message without the code it opens with (tally-proto's refusals open with theirs: "E204
/// bad signature ..."), for places that carry the code beside the message (an outcome's
/// `code`, a log line's `code` field), so the code is said once.
fn without_code<'a>(code: &str, message: &'a str) -> &'a str {
    match message.strip_prefix(code) {
        Some(rest) => rest.trim_start_matches(':').trim_start(),
        None => message,
    }
}

/// Sheets that passed the checks: position in the batch, envelope, its digest, warnings.
type Passed = Vec<(usize, SignedSheet, [u8; 32], Vec<String>, SheetTag)>;

/// What a log line about one sheet names: its digest (first 12 hex digits), unit, contest,
/// round and version.
#[derive(Debug, Clone)]
struct SheetTag {
    sheet: String,
    unit: String,
    contest: String,
    round: u32,
    version: u32,
}

impl SheetTag {
    fn of(sheet: &tally_core::sheet::TallySheet, digest: &[u8; 32]) -> SheetTag {
        SheetTag {
            sheet: hex::encode(&digest[..6]),
            unit: sheet.unit.to_string(),
            contest: sheet.contest.to_string(),
            round: sheet.round.0,
            version: sheet.version,
        }
    }

    /// For a sheet that did not verify: what its bytes claim if they decode at all, else
    /// the unit whose key signed it.
    fn claimed(definition: &Definition, signed: &SignedSheet, digest: &[u8; 32]) -> SheetTag {
        match tally_proto::decode_sheet(&signed.sheet) {
            Ok(sheet) => SheetTag::of(&sheet, digest),
            Err(_) => SheetTag {
                sheet: hex::encode(&digest[..6]),
                unit: definition
                    .unit_by_key(&signed.key_id)
                    .map(|u| u.id.to_string())
                    .unwrap_or_default(),
                contest: String::new(),
                round: 0,
                version: 0,
            },
        }
    }

    /// Logs a refusal or a sheet recorded but not counted, with the sheet's fields.
    fn log(&self, township: &TownshipId, outcome: &str, code: &str, message: &str) {
        tracing::warn!(
            township = %township,
            sheet = %self.sheet,
            unit = %self.unit,
            contest = %self.contest,
            round = self.round,
            version = self.version,
            outcome,
            code,
            "{}",
            without_code(code, message)
        );
    }
}
/// Sheets refused by the checks: position in the batch, outcome.
type Refused = Vec<(usize, pb::SheetOutcome)>;

/// Verifies and validates a batch for `township`: the sheets to propose (with their
/// positions in the request), and an outcome for each refused one.
fn check_batch(
    definition: &Definition,
    township: &TownshipId,
    signed: Vec<SignedSheet>,
) -> (Passed, Refused) {
    let verified = tally_proto::verify_batch(definition, &signed);
    let mut pass = Vec::new();
    let mut refuse = Vec::new();
    for (i, (signed, verified)) in signed.into_iter().zip(verified).enumerate() {
        let digest = signed.digest();
        let verified = match verified {
            Ok(v) => v,
            Err(e) => {
                SheetTag::claimed(definition, &signed, &digest).log(
                    township,
                    "refused",
                    e.code(),
                    &e.to_string(),
                );
                refuse.push((i, refused(e.code(), e.to_string(), digest)));
                continue;
            }
        };
        let tag = SheetTag::of(&verified.sheet, &digest);
        let unit_township = definition.unit(&verified.unit).map(|u| u.township.clone());
        if unit_township.as_ref() != Some(township) {
            let code = tally_core::validate::Code::UnitOfAnotherTownship.as_str();
            let message = format!(
                "unit {} belongs to township {}, not to {township}, which forwarded it; each township forwards only its own units' sheets",
                verified.unit,
                unit_township.map_or("(none)".to_owned(), |t| t.to_string())
            );
            tag.log(township, "refused", code, &message);
            refuse.push((i, refused(code, message, digest)));
            continue;
        }
        let findings = validate::check_sheet(definition, &verified.sheet);
        if let Some((code, message)) = validate::refusal(&findings) {
            tag.log(township, "refused", code.as_str(), &message);
            refuse.push((
                i,
                refused(
                    code.as_str(),
                    format!("{}: {message}", verified.sheet.label()),
                    digest,
                ),
            ));
            continue;
        }
        let warnings = findings
            .iter()
            .map(|f| format!("{} {}: {}", f.code.as_str(), f.field, f.message))
            .collect();
        pass.push((i, signed, digest, warnings, tag));
    }
    (pass, refuse)
}

fn outcome(o: &SheetOutcome, digest: [u8; 32], warnings: Vec<String>) -> pb::SheetOutcome {
    use pb::sheet_outcome::Kind;
    let (kind, code, message) = match o {
        SheetOutcome::Accepted => (Kind::Accepted, String::new(), String::new()),
        SheetOutcome::Duplicate => (
            Kind::Duplicate,
            String::new(),
            "recorded before; nothing changed".to_owned(),
        ),
        SheetOutcome::Conflict => (
            Kind::Conflict,
            "conflict".to_owned(),
            "another sheet holds this unit, contest, round and version: this one is recorded for the committee and not counted; the unit corrects it with a new version".to_owned(),
        ),
        SheetOutcome::Superseded => (
            Kind::Superseded,
            String::new(),
            "a higher version of this sheet counts; this one is recorded, not counted".to_owned(),
        ),
        SheetOutcome::Refused { code, message } => {
            return refused(code, message.clone(), digest);
        }
    };
    pb::SheetOutcome {
        kind: kind as i32,
        code,
        message,
        warnings: if kind == Kind::Accepted {
            warnings
        } else {
            Vec::new()
        },
        digest: hex::encode(digest),
    }
}

type ResultsStream = Pin<Box<dyn Stream<Item = Result<pb::ResultsResponse, Status>> + Send>>;
type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::county_server::County for CountyService {
    async fn ingest(
        &self,
        request: Request<pb::IngestRequest>,
    ) -> Result<Response<pb::IngestResponse>, Status> {
        let caller = peer_identity(&request)?;
        require(&caller, &[Role::Township, Role::Replica])?;
        let shared = &self.shared;
        let township = TownshipId::new(&request.get_ref().township_id);
        if caller.role() == Role::Township && caller.name() != township.as_str() {
            return Err(Status::permission_denied(format!(
                "this certificate is township {}'s; it may forward only township {}'s sheets, not township {township}'s",
                caller.name(),
                caller.name()
            )));
        }
        if shared.definition.township(&township).is_none() {
            return Err(Status::invalid_argument(format!(
                "township_id {township:?} is not a township of this election's definition"
            )));
        }
        check_definition(shared, &township, &request.get_ref().definition_digest)?;
        check_zero_report(shared)?;
        let n = request.get_ref().sheets.len();
        if n == 0 || n > INGEST_SHEETS_MAX {
            return Err(Status::invalid_argument(format!(
                "a batch carries 1 to {INGEST_SHEETS_MAX} sheets; this one has {n}: split it"
            )));
        }
        // Not sent again by this replica: when the leader changes under the call, or it breaks
        // or goes unanswered, the old leader may have recorded the batch, and a second delivery
        // from here would answer the caller's first sending DUPLICATE, which it cannot tell
        // from "recorded before" (the simulation counts that a broken promise). The caller is
        // answered UNAVAILABLE at once, "outcome unknown: send it again", and its own resend
        // is DUPLICATE for what was recorded, as it expects.
        let request = match forward::to_leader(shared, request, |channel, forwarded| async move {
            CountyClient::new(channel)
                .max_decoding_message_size(crate::limits::RESPONSE_BYTES_MAX)
                .max_encoding_message_size(crate::limits::INGEST_REQUEST_BYTES_MAX)
                .ingest(forwarded)
                .await
        })
        .await?
        {
            Routed::Here(request) => request.into_inner(),
            Routed::Answered(response) => return Ok(response),
        };

        // Envelopes that do not even decode are refused here; the rest are checked in bulk.
        let mut outcomes: Vec<Option<pb::SheetOutcome>> = vec![None; n];
        let mut signed = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        for (i, envelope) in request.sheets.into_iter().enumerate() {
            match SignedSheet::from_pb(envelope) {
                Ok(s) => {
                    signed.push(s);
                    positions.push(i);
                }
                Err(e) => outcomes[i] = Some(refused("E206", e.to_string(), [0; 32])),
            }
        }
        // The township vouches for the batch as it sent it: every envelope, in order. A
        // batch that does not carry a good countersignature is refused whole.
        let countersignature = request
            .countersignature
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "the batch carries no countersignature: township {township} signs each batch with its registered key (E209)"
                ))
            })
            .and_then(|c| {
                tally_proto::Countersignature::from_pb(c).map_err(|e| {
                    Status::invalid_argument(format!("countersignature: {e}"))
                })
            })?;
        if outcomes.iter().any(Option::is_some) {
            return Err(Status::invalid_argument(
                "an envelope of the batch does not decode, so the countersignature cannot cover it; the township must not forward it (E206)",
            ));
        }
        // Checked against the definition in force (the founding one and its amendments).
        let definition = shared.in_force();
        tally_proto::verify_countersignature(&definition, &township, &signed, &countersignature)
            .map_err(|e| {
                shared.sheets.countersignature_failed();
                // The message opens with its code already ("E209 the batch from ..."): every
                // refusal in tally-proto does, so it is never prefixed again here.
                Status::permission_denied(e.to_string())
            })?;
        let township_for_check = township.clone();
        let township_for_log = township.clone();
        // A small batch is checked in place; a large one on the blocking pool, so it does not
        // hold up other calls on this thread.
        let (pass, refuse) = if signed.len() <= CHECK_IN_PLACE_MAX {
            check_batch(&definition, &township_for_check, signed)
        } else {
            tokio::task::spawn_blocking(move || {
                check_batch(&definition, &township_for_check, signed)
            })
            .await
            .map_err(|e| {
                // The runtime cancels blocking work it has not started when the replica shuts
                // down: nothing was proposed, and the client must send the batch again
                // (elsewhere), which it does on UNAVAILABLE, not on INTERNAL.
                if e.is_cancelled() {
                    Status::unavailable(
                        "the replica is shutting down; nothing of the batch was recorded: send it again",
                    )
                } else {
                    Status::internal(format!("checking the batch failed: {e}"))
                }
            })?
        };
        for (i, o) in refuse {
            outcomes[positions[i]] = Some(o);
        }
        let mut response = pb::IngestResponse {
            leader_id: shared.status().id.get(),
            ..Default::default()
        };
        if !pass.is_empty() {
            // The countersignature covers the batch as sent; the log keeps it with the batch
            // when every sheet of it is recorded, so it checks against the entry.
            let countersignature = (pass.len() == n).then_some(countersignature);
            let (sheets, answers): (Vec<SignedSheet>, Vec<_>) = pass
                .into_iter()
                .map(|(i, signed, digest, warnings, tag)| (signed, (i, digest, warnings, tag)))
                .unzip();
            let applied = within(
                WRITE_DEADLINE,
                "recording the batch",
                shared.node.propose(Command::Ingest {
                    township,
                    sheets,
                    countersignature,
                }),
            )
            .await?;
            for ((i, digest, warnings, tag), o) in
                answers.into_iter().zip(&applied.applied.outcomes)
            {
                let answer = outcome(o, digest, warnings);
                if matches!(
                    o,
                    SheetOutcome::Conflict
                        | SheetOutcome::Superseded
                        | SheetOutcome::Refused { .. }
                ) {
                    let kind = pb::sheet_outcome::Kind::try_from(answer.kind)
                        .map_or("?", |k| k.as_str_name());
                    tag.log(&township_for_log, kind, "", &answer.message);
                }
                outcomes[positions[i]] = Some(answer);
            }
            response.log_index = applied.chain.log_index.get();
            response.chain_head = applied.chain.head.to_vec();
        }
        response.outcomes = outcomes
            .into_iter()
            .map(|o| o.expect("every sheet has an outcome"))
            .collect();
        shared.sheets.count(&response.outcomes);
        Ok(Response::new(response))
    }

    async fn results(
        &self,
        request: Request<pb::ResultsRequest>,
    ) -> Result<Response<pb::ResultsResponse>, Status> {
        let caller = peer_identity(&request)?;
        let filter = results_filter(&caller, request.into_inner())?;
        let mut at_least = self.shared.status().applied_index;
        if !filter.stale {
            at_least = within(
                READ_DEADLINE,
                "confirming the latest committed index with the leader",
                self.shared.node.read_barrier(),
            )
            .await
            .map_err(|s| {
                Status::unavailable(format!(
                    "{}; ask for a stale read (`stale`) to see this replica's possibly older results",
                    s.message()
                ))
            })?;
        }
        let at = self.shared.results(at_least).await?;
        Ok(Response::new(results_response(
            &at,
            &filter,
            self.shared.status().id,
        )))
    }

    type WatchResultsStream = ResultsStream;

    async fn watch_results(
        &self,
        request: Request<pb::ResultsRequest>,
    ) -> Result<Response<Self::WatchResultsStream>, Status> {
        let caller = peer_identity(&request)?;
        let filter = results_filter(&caller, request.into_inner())?;
        let interval = Duration::from_millis(match filter.min_interval_ms {
            0 => 500,
            ms => u64::from(ms.max(50)),
        });
        let shared = self.shared.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut status = shared.node.status();
            let mut last_sent = None;
            loop {
                let applied = status.borrow_and_update().applied_index;
                if last_sent != Some(applied) {
                    let item = shared
                        .results(applied)
                        .await
                        .map(|at| results_response(&at, &filter, shared.status().id));
                    if tx.send(item).await.is_err() {
                        return;
                    }
                    last_sent = Some(applied);
                }
                tokio::time::sleep(interval).await;
                tokio::select! {
                    changed = status.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let caller = peer_identity(&request)?;
        require(&caller, &[Role::Operator, Role::Township, Role::Replica])?;
        Ok(Response::new(self.shared.status_response()))
    }

    type ExportStream = ExportStream;

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let caller = peer_identity(&request)?;
        require(&caller, &[Role::Operator])?;
        let shared = self.shared.clone();
        let mut at_least = shared.status().applied_index;
        if !request.get_ref().stale {
            at_least = within(
                READ_DEADLINE,
                "confirming the latest committed index with the leader",
                shared.node.read_barrier(),
            )
            .await
            .map_err(|s| {
                Status::unavailable(format!(
                    "{}; ask for a stale export to take this replica's possibly older evidence",
                    s.message()
                ))
            })?;
        }
        // The result and the records come from the same view of the state, so the header
        // describes exactly the records that follow. The driver copies no record for it: the
        // view shares them (`crate::state::Records`), and encoding happens here.
        let at = shared.results(at_least).await?;
        let (records, chain, result) = (at.view.records.clone(), at.chain, &at.result);
        if chain.log_index < at_least {
            return Err(Status::internal(format!(
                "the state read at index {} is behind the read index {at_least}",
                chain.log_index
            )));
        }
        let header = pb::ExportHeader {
            election: result.election.clone(),
            log_index: chain.log_index.get(),
            chain_head: chain.head.to_vec(),
            chain_length: chain.length,
            result_json: at.result_json.clone(),
            replica_id: shared.status().id.get(),
            countersignatures: EXPORT_COUNTERSIGNATURES.to_owned(),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(EXPORT_CHUNKS_IN_FLIGHT);
        tokio::spawn(async move {
            let first = pb::ExportChunk {
                header: Some(header),
                records: Vec::new(),
            };
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            let mut records = records.iter().peekable();
            while records.peek().is_some() {
                let chunk = pb::ExportChunk {
                    header: None,
                    records: records
                        .by_ref()
                        .take(EXPORT_RECORDS_PER_CHUNK)
                        .map(tally_proto::county::record_to_pb)
                        .collect(),
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn amend(
        &self,
        request: Request<pb::AmendRequest>,
    ) -> Result<Response<pb::AmendResponse>, Status> {
        let caller = peer_identity(&request)?;
        require(&caller, &[Role::Operator, Role::Replica])?;
        let shared = &self.shared;
        let request = match forward::to_leader(shared, request, |channel, forwarded| async move {
            CountyClient::new(channel).amend(forwarded).await
        })
        .await?
        {
            Routed::Here(request) => request.into_inner(),
            Routed::Answered(response) => return Ok(response),
        };
        check_act_definition(shared, &request.definition_digest)?;
        let act = tally_proto::county::act_from_pb(pb::CommitteeAct {
            body: request.body,
            signatures: request.signatures,
        })
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Checked against the definition in force before it is proposed, so a bad act is
        // answered with every problem and never reaches the log. Whether a contest has been
        // polled is the record's to decide when it applies.
        let definition = shared.in_force();
        let status = shared.status();
        let (recorded, zero_report) = (
            status.sheets_counted > 0 || status.conflicts > 0,
            status.zero_report.map(LogIndex::get),
        );
        let checked = act.clone();
        let body = tokio::task::spawn_blocking(move || {
            let (body, _) = tally_core::act::check(&definition, &checked)?;
            match &body {
                tally_core::act::ActBody::Amendment(amendment) => {
                    tally_core::act::amend(&definition, amendment, 0, &|_| false)?;
                }
                tally_core::act::ActBody::ZeroReport(report) => {
                    tally_core::act::check_zero_report(&definition, report, recorded, zero_report)?;
                }
                // Whether a decision, confirmation or reopening is needed and holds is the
                // record's to decide when it applies (it depends on the ledger and the
                // decisions before it); a refusal then changes nothing and says why.
                tally_core::act::ActBody::Decision(_)
                | tally_core::act::ActBody::Confirmation(_)
                | tally_core::act::ActBody::Reopening(_) => {}
            }
            Ok::<_, tally_core::Error>(body)
        })
        .await
        .map_err(|e| {
            Status::unavailable(format!(
                "checking the act did not finish: {e}; nothing was recorded"
            ))
        })?
        .map_err(|e| Status::invalid_argument(format!("{e}\nnothing was recorded")))?;
        let label = body.label();
        let id = body.id().to_owned();
        let applied = within(
            WRITE_DEADLINE,
            "recording the act",
            shared.node.propose(Command::Act(act)),
        )
        .await?;
        match applied.applied.act {
            Some(Ok(())) => {
                let changes = shared
                    .in_force()
                    .amended
                    .amendments
                    .iter()
                    .find(|a| a.id == id)
                    .map(|a| a.changes.clone())
                    .unwrap_or_default();
                tracing::info!(
                    act = %label,
                    log_index = applied.chain.log_index.get(),
                    "recorded a committee act"
                );
                Ok(Response::new(pb::AmendResponse {
                    log_index: applied.chain.log_index.get(),
                    chain_head: applied.chain.head.to_vec(),
                    amendment_id: id,
                    changes,
                }))
            }
            Some(Err(problems)) => Err(Status::failed_precondition(format!(
                "{problems}\nthe record refused it when it applied; nothing was changed"
            ))),
            None => Err(Status::internal("the act's outcome is missing")),
        }
    }

    async fn acts(
        &self,
        request: Request<pb::ActsRequest>,
    ) -> Result<Response<pb::ActsResponse>, Status> {
        let caller = peer_identity(&request)?;
        require(&caller, &[Role::Operator, Role::Township, Role::Replica])?;
        let after = request.get_ref().after_log_index;
        let view = self.shared.node.view().await.map_err(unavailable)?;
        let records = view
            .records
            .iter()
            .filter(|r| r.log_index > after && matches!(r.act, crate::state::Act::Committee(_)))
            .map(tally_proto::county::record_to_pb)
            .collect();
        Ok(Response::new(pb::ActsResponse {
            records,
            log_index: view.chain.log_index.get(),
        }))
    }
}

/// What a results call asks for, limited to what the caller may see.
#[derive(Clone)]
struct Filter {
    township: Option<String>,
    contest: Option<String>,
    stale: bool,
    min_interval_ms: u32,
}

fn results_filter(caller: &Identity, request: pb::ResultsRequest) -> Result<Filter, Status> {
    require(caller, &[Role::Operator, Role::Township])?;
    let mut township = (!request.township_id.is_empty()).then_some(request.township_id);
    if caller.role() == Role::Township {
        match &township {
            Some(t) if t != caller.name() => {
                return Err(Status::permission_denied(format!(
                    "township {} may read only its own results, not township {t}'s",
                    caller.name()
                )));
            }
            _ => township = Some(caller.name().to_owned()),
        }
    }
    Ok(Filter {
        township,
        contest: (!request.contest_id.is_empty()).then_some(request.contest_id),
        stale: request.stale,
        min_interval_ms: request.min_interval_ms,
    })
}

/// The wire name of a contest's status; the conversion lives in [`tally_rpc::results`], shared
/// with the township aggregator.
pub use tally_rpc::results::contest_status_name;
use tally_rpc::results::{contest_result, summary, township_summary};

fn results_response(at: &ResultsAt, filter: &Filter, replica: ReplicaId) -> pb::ResultsResponse {
    let result = &at.result;
    let keep_township = |t: &str| filter.township.as_deref().is_none_or(|f| f == t);
    let keep_contest = |c: &str| filter.contest.as_deref().is_none_or(|f| f == c);
    let contests: Vec<&tally_core::results::ContestResult> = result
        .contests
        .iter()
        .filter(|c| keep_township(c.township.as_str()) && keep_contest(c.contest.as_str()))
        .collect();
    let whole = filter.township.is_none() && filter.contest.is_none();
    let result_json = if whole {
        at.result_json.clone()
    } else {
        serde_json::json!({
            "election": result.election,
            "contests": contests,
            "townships": result.townships.iter().filter(|t| keep_township(t.township.as_str())).collect::<Vec<_>>(),
        })
        .to_string()
    };
    pb::ResultsResponse {
        log_index: at.chain.log_index.get(),
        chain_head: at.chain.head.to_vec(),
        chain_length: at.chain.length,
        election: result.election.clone(),
        mode: result.mode.as_str().to_owned(),
        county: whole.then(|| summary(&result.county.all)),
        townships: result
            .townships
            .iter()
            .filter(|t| keep_township(t.township.as_str()))
            .map(township_summary)
            .collect(),
        contests: contests.iter().map(|c| contest_result(c)).collect(),
        conflicts: at
            .conflicts
            .iter()
            .filter(|c| keep_contest(&c.contest_id))
            .filter(|c| {
                filter.township.is_none()
                    || contests
                        .iter()
                        .any(|k| k.contest.as_str() == c.contest_id.as_str())
            })
            .cloned()
            .collect(),
        result_json,
        replica_id: replica.get(),
        matters: at
            .matters
            .iter()
            .filter(|m| contests.iter().any(|k| k.contest == m.contest))
            .map(tally_rpc::results::matter)
            .collect(),
    }
}

// ---------------------------------------------------------------- Admin

/// The request for this replica to handle as the leader: a follower forwards the call to the
/// leader it knows and returns the leader's answer from the handler (`Admin.$method`).
macro_rules! at_leader {
    ($service:ident, $request:ident, $method:ident) => {
        match forward::to_leader(
            &$service.shared,
            $request,
            |channel, forwarded| async move { AdminClient::new(channel).$method(forwarded).await },
        )
        .await?
        {
            Routed::Here(request) => request,
            Routed::Answered(response) => return Ok(response),
        }
    };
}

pub struct AdminService {
    pub shared: Arc<Shared>,
}

impl AdminService {
    /// Proposes a membership change and waits until the status shows it applied.
    async fn change(
        &self,
        change: ConfChangeType,
        id: ReplicaId,
        context: Vec<u8>,
        what: String,
        done: impl Fn(&NodeStatus) -> bool,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        self.shared
            .node
            .change_membership(change, id, context)
            .await
            .map_err(unavailable)?;
        self.wait_for(what, done).await
    }

    /// Waits until the status satisfies `done`, or says the change was not seen in time.
    async fn wait_for(
        &self,
        what: String,
        done: impl Fn(&NodeStatus) -> bool,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        let mut status = self.shared.node.status();
        let seen = tokio::time::timeout(ADMIN_DEADLINE, async {
            loop {
                if done(&status.borrow_and_update()) {
                    return true;
                }
                if status.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await
        .unwrap_or(false);
        if !seen {
            return Err(Status::deadline_exceeded(format!(
                "{what}: not applied within {} s; `tally cluster status` shows whether it happened (another membership change may have been pending; try again)",
                ADMIN_DEADLINE.as_secs()
            )));
        }
        Ok(self.answer(what))
    }

    /// The answer to an admin call: what happened, and the membership as it is now.
    fn answer(&self, message: String) -> Response<pb::AdminResponse> {
        let s = self.shared.status();
        Response::new(pb::AdminResponse {
            message,
            voters: ids_on_the_wire(&s.voters),
            learners: ids_on_the_wire(&s.learners),
            leader_id: s.leader.map_or(0, ReplicaId::get),
        })
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn add_replica(
        &self,
        request: Request<pb::AddReplicaRequest>,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        require(&peer_identity(&request)?, &[Role::Operator, Role::Replica])?;
        let request = at_leader!(self, request, add_replica);
        let pb::AddReplicaRequest { id, address } = request.into_inner();
        let status = self.shared.status();
        if id == 0 {
            return Err(Status::invalid_argument("replica ids start at 1"));
        }
        let id = ReplicaId::new(id);
        if status.voters.contains(&id) || status.learners.contains(&id) {
            return Err(Status::already_exists(format!(
                "replica {id} is already a member of the cluster"
            )));
        }
        let highest = status
            .addresses
            .keys()
            .chain(&status.voters)
            .chain(&status.learners)
            .copied()
            .max()
            .unwrap_or_default();
        if id <= highest {
            return Err(Status::invalid_argument(format!(
                "replica id {id} is not new: ids up to {highest} have been used in this cluster, and an id is never used twice (a replica that lost its data must not pass for the one that voted); use id {}",
                highest.get() + 1
            )));
        }
        if address.is_empty() || !address.contains(':') {
            return Err(Status::invalid_argument(format!(
                "address {address:?} is not host:port"
            )));
        }
        self.change(
            ConfChangeType::AddLearnerNode,
            id,
            address.clone().into_bytes(),
            format!("replica {id} ({address}) added as a learner; promote it once it has caught up (`tally cluster promote {id}`)"),
            move |s| s.learners.contains(&id),
        )
        .await
    }

    async fn promote_replica(
        &self,
        request: Request<pb::ReplicaRequest>,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        require(&peer_identity(&request)?, &[Role::Operator, Role::Replica])?;
        let request = at_leader!(self, request, promote_replica);
        let pb::ReplicaRequest { id, max_lag } = request.into_inner();
        let id = ReplicaId::new(id);
        let max_lag = if max_lag == 0 {
            PROMOTE_MAX_LAG
        } else {
            max_lag
        };
        let status = self.shared.status();
        if status.voters.contains(&id) {
            return Err(Status::already_exists(format!(
                "replica {id} is already a voter"
            )));
        }
        if !status.learners.contains(&id) {
            return Err(Status::not_found(format!(
                "replica {id} is not a learner of this cluster; add it first (`tally cluster add {id} HOST:PORT`)"
            )));
        }
        let matched = status
            .progress
            .iter()
            .find(|p| p.id == id)
            .map_or(0, |p| p.matched.get());
        let lag = status.last_index.get().saturating_sub(matched);
        if lag > max_lag {
            return Err(Status::failed_precondition(format!(
                "replica {id} is {lag} entries behind the leader (at most {max_lag} allowed); wait until it has caught up (`tally cluster status` shows its lag) and promote it again"
            )));
        }
        self.change(
            ConfChangeType::AddNode,
            id,
            Vec::new(),
            format!("replica {id} is now a voter"),
            move |s| s.voters.contains(&id),
        )
        .await
    }

    async fn remove_replica(
        &self,
        request: Request<pb::ReplicaRequest>,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        require(&peer_identity(&request)?, &[Role::Operator, Role::Replica])?;
        let request = at_leader!(self, request, remove_replica);
        let id = ReplicaId::new(request.into_inner().id);
        let status = self.shared.status();
        if !status.voters.contains(&id) && !status.learners.contains(&id) {
            return Err(Status::not_found(format!(
                "replica {id} is not a member of this cluster"
            )));
        }
        if status.leader == Some(id) {
            return Err(Status::failed_precondition(format!(
                "replica {id} is the leader; hand leadership to another voter first (`tally cluster transfer TO`)"
            )));
        }
        if status.voters == [id] {
            return Err(Status::failed_precondition(format!(
                "replica {id} is the last voter; a cluster cannot remove its last voter"
            )));
        }
        self.change(
            ConfChangeType::RemoveNode,
            id,
            Vec::new(),
            format!("replica {id} removed; its id is never used again"),
            move |s| !s.voters.contains(&id) && !s.learners.contains(&id),
        )
        .await
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::ReplicaRequest>,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        require(&peer_identity(&request)?, &[Role::Operator, Role::Replica])?;
        let request = at_leader!(self, request, transfer_leader);
        let id = ReplicaId::new(request.into_inner().id);
        let status = self.shared.status();
        if !status.voters.contains(&id) {
            return Err(Status::invalid_argument(format!(
                "replica {id} is not a voter; only a voter can lead"
            )));
        }
        if status.leader == Some(id) {
            return Ok(self.answer(format!("replica {id} already leads")));
        }
        self.shared
            .node
            .transfer_leader(id)
            .await
            .map_err(unavailable)?;
        self.wait_for(format!("replica {id} now leads"), move |s| {
            s.leader == Some(id)
        })
        .await
    }
}

// ---------------------------------------------------------------- Raft

pub struct RaftService {
    pub shared: Arc<Shared>,
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn send(
        &self,
        request: Request<Streaming<pb::RaftBatch>>,
    ) -> Result<Response<pb::RaftAck>, Status> {
        let caller = peer_identity(&request)?;
        require(&caller, &[Role::Replica])?;
        let peer = caller
            .replica_id()
            .map(ReplicaId::new)
            .ok_or_else(|| Status::permission_denied("a replica certificate without an id"))?;
        let me = self.shared.status().id;
        let mut stream = request.into_inner();
        let mut received = 0u64;
        let mut snapshot = crate::transport::SnapshotAssembly::default();
        while let Some(batch) = stream.message().await? {
            if batch.from != peer.get() {
                return Err(Status::permission_denied(format!(
                    "the batch says it is from replica {} but the certificate is replica {peer}'s",
                    batch.from
                )));
            }
            self.shared.check_incarnation(peer, &batch.incarnation)?;
            self.shared
                .heard
                .lock()
                .unwrap()
                .insert(peer, tokio::time::Instant::now());
            // A snapshot arrives in pieces; it is parsed like any message once whole.
            let whole = match batch.snapshot {
                Some(piece) if batch.messages.is_empty() => {
                    let whole = snapshot.add(piece)?;
                    if let Some(bytes) = &whole {
                        tracing::info!(
                            replica = peer.get(),
                            bytes = bytes.len(),
                            "received a snapshot"
                        );
                    }
                    whole
                }
                Some(_) => {
                    return Err(Status::invalid_argument(
                        "a raft batch carries either messages or a snapshot piece, not both",
                    ));
                }
                None => None,
            };
            let mut messages = Vec::with_capacity(batch.messages.len());
            for bytes in batch.messages.iter().chain(whole.as_ref()) {
                // Parsed only after the sender proved it is a replica of this county (see
                // the advisory on rust-protobuf in ../shared/design/replication-notes.md).
                let message = raft::eraftpb::Message::parse_from_bytes(bytes)
                    .map_err(|e| Status::invalid_argument(format!("a raft message: {e}")))?;
                if message.from != peer.get() || message.to != me.get() {
                    return Err(Status::invalid_argument(format!(
                        "a raft message from {} to {} arrived on replica {peer}'s link to replica {me}",
                        message.from, message.to
                    )));
                }
                messages.push(message);
            }
            received += messages.len() as u64;
            self.shared.node.step(messages).await.map_err(unavailable)?;
        }
        if snapshot.unfinished() {
            return Err(Status::invalid_argument(
                "the call ended before the last piece of its snapshot",
            ));
        }
        Ok(Response::new(pb::RaftAck { received }))
    }
}

/// E213: a sender that names its definition's digest must have the one the county was founded
/// with (docs/design/record.md). Before the founding is applied there is nothing to compare.
fn check_definition(shared: &Shared, township: &TownshipId, digest: &str) -> Result<(), Status> {
    if digest.is_empty() {
        return Ok(());
    }
    let Some(founding) = shared.node.status().borrow().founding else {
        return Ok(());
    };
    if digest.eq_ignore_ascii_case(&founding.to_string()) {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "E213 township {township}'s election definition (digest {digest}) is not the one the county was founded with (digest {founding}); nothing of this batch was recorded: its operator installs the county's definition (tally cluster status shows the digest) and restarts the aggregator"
    )))
}

/// E213 for an act: the sender prepared it under its own definition, which must be the
/// founding one.
fn check_act_definition(shared: &Shared, digest: &str) -> Result<(), Status> {
    let founding = shared.node.status().borrow().founding;
    match founding {
        Some(founding)
            if !digest.is_empty() && !digest.eq_ignore_ascii_case(&founding.to_string()) =>
        {
            Err(Status::failed_precondition(format!(
                "E213 the act was prepared under a definition with digest {digest}, not the one the county was founded with (digest {founding}); nothing was recorded: prepare it with the county's definition (tally cluster status shows the digest)"
            )))
        }
        _ => Ok(()),
    }
}

/// An official election takes no sheet before its zero report is recorded.
fn check_zero_report(shared: &Shared) -> Result<(), Status> {
    let status = shared.status();
    if status.founding.is_some()
        && status.zero_report.is_none()
        && status.definition.0.election.mode == tally_core::definition::Mode::Official
    {
        // UNAVAILABLE: a township keeps the batch and sends it again, as it does while the
        // cluster is being founded.
        return Err(Status::unavailable(
            "the official count starts from the zero report, which is not recorded yet: the committee prepares it with `tally zero-report prepare`, k officials sign it and an operator submits it; nothing of this batch was recorded: send it again then",
        ));
    }
    Ok(())
}
