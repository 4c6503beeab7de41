//! The replica's plain HTTP listener (`http_listen` in its config): Prometheus metrics and the
//! election-night dashboard.
//!
//! - `GET /metrics`: the OpenMetrics text of [`crate::metrics`].
//! - `GET /`: the dashboard, one self-contained page (no network: its CSS and script are in
//!   it) that polls `/api/dashboard` every 2 s.
//! - `GET /api/dashboard`: JSON of this replica's *applied* state: results, reporting
//!   progress, contests that need attention, replication health and alerts. It is not a
//!   linearizable read (that is `tally cluster results`): a follower's page may trail the
//!   leader by its lag, and the page says which replica and log index it shows. Its results
//!   are at most [`DASHBOARD_RESULTS_AGE_MAX`] old, so polling cannot make the replica
//!   compute them more often than that.
//!
//! Everything here is read-only and unauthenticated (the gRPC services are where TLS and roles
//! apply), so the listener is bound where only operators and the metrics collector reach it.

use crate::reads::ResultsAt;
use crate::shared::Shared;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tally_core::results::{ContestResult, ContestStatus, FollowUp, RoundStatus, Summary};
use tally_rpc::pb;
use tally_rpc::pb::county_client::CountyClient;

/// The dashboard page, served as is.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// How long the dashboard waits for another replica's Status before calling it unreachable.
pub const PEER_STATUS_DEADLINE: Duration = Duration::from_millis(800);

/// A follower more than this many entries behind the leader is shown as lagging.
pub const LAG_ALERT_ENTRIES: u64 = 100;

/// The dashboard shows results computed within this long, even if entries were applied since:
/// it is unauthenticated and polled, so however often it is asked, it makes the replica
/// compute results at most once per this interval (and once per applied index).
pub const DASHBOARD_RESULTS_AGE_MAX: Duration = Duration::from_secs(1);

/// The most contests named one by one in an alert before the rest are counted.
const ALERT_NAMES_MAX: usize = 8;

/// The HTTP routes of one replica.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(dashboard_page))
        .route("/metrics", get(metrics))
        .route("/api/dashboard", get(dashboard_json))
        .with_state(shared)
}

/// Serves [`router`] on `listener` until `shutdown` ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn dashboard_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        DASHBOARD_HTML,
    )
        .into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let text = shared.metrics.render(&shared.status_response());
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

async fn dashboard_json(State(shared): State<Arc<Shared>>) -> Response {
    let status = shared.status_response();
    let results = match shared
        .recent_results(
            crate::ids::LogIndex::new(status.applied_index),
            DASHBOARD_RESULTS_AGE_MAX,
        )
        .await
    {
        Ok(at) => at,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "application/json")],
                json!({ "error": e.message() }).to_string(),
            )
                .into_response();
        }
    };
    let peers = peer_statuses(&shared, &status).await;
    let body = dashboard(&shared, &status, &results, &peers);
    (
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// Every other replica's Status, asked at once; `None` for one that did not answer in time.
async fn peer_statuses(
    shared: &Shared,
    status: &pb::StatusResponse,
) -> BTreeMap<u64, Option<pb::StatusResponse>> {
    let members = status.voters.iter().chain(&status.learners);
    let calls = members.filter(|id| **id != status.replica_id).map(|id| {
        let channel = status
            .addresses
            .get(id)
            .and_then(|address| shared.peer_channel(address).ok());
        let id = *id;
        async move {
            let Some(channel) = channel else {
                return (id, None);
            };
            let mut client = CountyClient::new(channel);
            let call = client.status(pb::StatusRequest {});
            let answer = tokio::time::timeout(PEER_STATUS_DEADLINE, call).await;
            (id, answer.ok().and_then(Result::ok).map(|r| r.into_inner()))
        }
    });
    // A handful of peers, asked at once; each call has its own deadline.
    let mut asked = tokio::task::JoinSet::new();
    for call in calls {
        asked.spawn(call);
    }
    let mut answers = BTreeMap::new();
    while let Some(answer) = asked.join_next().await {
        if let Ok((id, status)) = answer {
            answers.insert(id, status);
        }
    }
    answers
}

fn summary_json(s: &Summary) -> Value {
    json!({
        "contests_total": s.contests_total,
        "contests_decided": s.contests_decided,
        "seats_total": s.seats_total,
        "seats_filled": s.seats_filled,
        "vacancies": s.vacancies,
        "units_reported": s.units_reported,
        "units_expected": s.units_expected,
        "registered_voters": s.registered_voters,
        "voted": s.voted,
        "turnout_per_mille": s.turnout_per_mille,
    })
}

/// What a contest needs from the committee, from its rounds: `void` (a round void under
/// Art 44 or invalid under Art 45), `tie` (a revote, 再次投票), `further` (另行选举),
/// `committee` (the committee must decide), `vacancy`.
pub fn contest_flags(c: &ContestResult) -> Vec<&'static str> {
    let mut flags = Vec::new();
    let mut add = |f| {
        if !flags.contains(&f) {
            flags.push(f);
        }
    };
    for round in &c.rounds {
        if matches!(
            round.status,
            RoundStatus::VoidArt44 { .. } | RoundStatus::TurnoutFailed { .. }
        ) {
            add("void");
        }
        match round.follow_up {
            FollowUp::Revote { .. } => add("tie"),
            FollowUp::Further { .. } => add("further"),
            FollowUp::FurtherCandidatesTie { .. } => add("committee"),
            FollowUp::Vacant { .. } => add("vacancy"),
            FollowUp::None | FollowUp::HeldAgain => {}
        }
    }
    if c.status == ContestStatus::CommitteeDecision {
        add("committee");
    }
    if c.vacancies > 0 {
        add("vacancy");
    }
    flags
}

fn per_mille(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        0
    } else {
        // u128: the product of two vote counts cannot overflow it.
        (u128::from(part) * 1000 / u128::from(whole)) as u64
    }
}

/// The dashboard's JSON from this replica's status, its results and the peers' answers.
fn dashboard(
    shared: &Shared,
    status: &pb::StatusResponse,
    at: &ResultsAt,
    peers: &BTreeMap<u64, Option<pb::StatusResponse>>,
) -> Value {
    let result = &at.result;
    let township_names: BTreeMap<&str, &str> = result
        .townships
        .iter()
        .map(|t| (t.township.as_str(), t.name.as_str()))
        .collect();
    let contests: Vec<Value> = result
        .contests
        .iter()
        .map(|c| {
            let latest = c.rounds.last();
            let (reported, expected) =
                latest.map_or((0, 0), |r| (r.units_reported, r.units_expected));
            let (collected, registered) = latest.map_or((0, 0), |r| {
                (r.totals.ballots_collected, r.totals.registered_voters)
            });
            json!({
                "id": c.contest.as_str(),
                "name": c.name,
                "level": c.level.name(),
                "township": c.township.as_str(),
                "township_name": township_names.get(c.township.as_str()).copied().unwrap_or(c.township.as_str()),
                "seats": c.seats,
                "status": tally_rpc::results::contest_status_name(c.status),
                "flags": contest_flags(c),
                // Something is still to be done: a round to hold or decide, a committee
                // decision, or seats left vacant (a by-election later).
                "open": c.vacancies > 0 || matches!(
                    c.status,
                    ContestStatus::AwaitingRound
                        | ContestStatus::CommitteeDecision
                        | ContestStatus::RoundLimit
                ),
                "round": latest.map_or(1, |r| r.round),
                "rounds": c.rounds.len(),
                "units_reported": reported,
                "units_expected": expected,
                "ballots_collected": collected,
                "registered_voters": registered,
                "turnout_per_mille": per_mille(collected, registered),
                "votes": latest.map(|r| r.votes.iter().map(|v| json!({"name": v.name, "votes": v.votes})).collect::<Vec<_>>()).unwrap_or_default(),
                "votes_needed": latest.map_or(0, |r| r.votes_needed),
                "elected": c.elected.iter().map(|e| json!({"name": e.name, "votes": e.votes, "round": e.round})).collect::<Vec<_>>(),
                "seats_filled": c.seats_filled,
                "vacancies": c.vacancies,
                // The committee (docs/design/committee.md): the confirmation in force, sheets
                // recorded after it, and what waits in this contest.
                "confirmation": c.confirmed.as_ref().map(|l| l.confirmation.clone()),
                "decisions": c.decisions.iter().map(|n| json!({"id": n.id, "kind": n.kind, "what": n.what, "reason": n.reason})).collect::<Vec<_>>(),
                "after_lock": c.after_lock.len(),
                "waiting": at.matters.iter().filter(|m| m.contest == c.contest).count(),
            })
        })
        .collect();

    // Replication: this replica from its own status, the others from theirs; the leader's
    // view (from whichever status is the leader's) gives each one's lag.
    let leader_view: Option<&pb::StatusResponse> = if status.role == "leader" {
        Some(status)
    } else {
        peers
            .values()
            .flatten()
            .find(|p| p.role == "leader" && p.replica_id == status.leader_id)
    };
    let lag_of = |id: u64| -> Option<u64> {
        let leader = leader_view?;
        if leader.replica_id == id {
            return Some(0);
        }
        leader
            .peers
            .iter()
            .find(|p| p.replica_id == id)
            .map(|p| p.lag)
    };
    let mut replicas = vec![json!({
        "id": status.replica_id,
        "this": true,
        "reachable": status.running,
        "role": status.role,
        "term": status.term,
        "applied_index": status.applied_index,
        "commit_index": status.commit_index,
        "lag": lag_of(status.replica_id),
        "voter": status.voters.contains(&status.replica_id),
    })];
    for (id, answer) in peers {
        replicas.push(match answer {
            Some(p) => json!({
                "id": id,
                "this": false,
                "reachable": p.running,
                "role": p.role,
                "term": p.term,
                "applied_index": p.applied_index,
                "commit_index": p.commit_index,
                "lag": lag_of(*id),
                "voter": status.voters.contains(id),
            }),
            None => json!({
                "id": id,
                "this": false,
                "reachable": false,
                "role": "unreachable",
                "term": null,
                "applied_index": null,
                "commit_index": null,
                "lag": lag_of(*id),
                "voter": status.voters.contains(id),
            }),
        });
    }

    let mut alerts: Vec<Value> = Vec::new();
    let mut alert = |level: &str, text: String| alerts.push(json!({"level": level, "text": text}));
    if status.leader_id == 0 {
        alert(
            "critical",
            format!(
                "副本 {} 当前不知道主副本（选举进行中或多数副本不可达）· no leader known",
                status.replica_id
            ),
        );
    }
    for r in &replicas {
        let id = r["id"].as_u64().unwrap_or(0);
        if r["role"].as_str() == Some("stopped") {
            alert(
                "critical",
                format!(
                    "副本 {id} 已停止（存储故障，见其日志）· replica {id} stopped (its storage failed or it hit a bug; see its log)"
                ),
            );
        } else if !r["reachable"].as_bool().unwrap_or(false) {
            alert(
                "critical",
                format!("副本 {id} 不可达 · replica {id} unreachable"),
            );
        } else if let Some(lag) = r["lag"].as_u64()
            && lag > LAG_ALERT_ENTRIES
        {
            alert(
                "warning",
                format!("副本 {id} 落后 {lag} 条日志 · replica {id} lags {lag} entries"),
            );
        }
    }
    if !at.conflicts.is_empty() {
        let slots: Vec<String> = at
            .conflicts
            .iter()
            .take(ALERT_NAMES_MAX)
            .map(|c| format!("{}/{}", c.unit_id, c.contest_id))
            .collect();
        alert(
            "critical",
            format!(
                "{} 份冲突计票单（同一投票单元、选区、轮次与版本，内容不同；未计入）· conflicting sheets: {}{}",
                at.conflicts.len(),
                slots.join(", "),
                if at.conflicts.len() > ALERT_NAMES_MAX {
                    " …"
                } else {
                    ""
                }
            ),
        );
    }
    // Each refusal is counted by the replica that answered it (the leader then), so the sum
    // over every replica that answered counts each once, whichever replica shows the page.
    let bad_signatures = status.signature_failures
        + peers
            .values()
            .flatten()
            .map(|p| p.signature_failures)
            .sum::<u64>();
    if bad_signatures > 0 {
        alert(
            "critical",
            format!(
                "{bad_signatures} 个签名验证失败（各副本收到的合计）· signatures that did not verify (E204/E209), all replicas"
            ),
        );
    }
    // A township is silent when none of its contests' units have reported while units
    // elsewhere have.
    let mut reported_by_township: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for c in &result.contests {
        if let Some(r) = c.rounds.first() {
            let e = reported_by_township.entry(c.township.as_str()).or_default();
            e.0 += r.units_reported as u64;
            e.1 += r.units_expected as u64;
        }
    }
    let county_id = result.county.county.as_str();
    let any_reported = reported_by_township.values().any(|(r, _)| *r > 0);
    let silent: Vec<&str> = reported_by_township
        .iter()
        .filter(|(t, (r, e))| **t != county_id && *r == 0 && *e > 0)
        .map(|(t, _)| township_names.get(t).copied().unwrap_or(t))
        .collect();
    if any_reported && !silent.is_empty() {
        alert(
            "warning",
            format!(
                "{} 个乡镇尚无任何投票单元报告：{} · silent townships",
                silent.len(),
                silent.join("、")
            ),
        );
    }
    let open: Vec<&str> = contests
        .iter()
        .filter(|c| c["open"] == true)
        .filter_map(|c| c["name"].as_str())
        .collect();
    if !open.is_empty() {
        alert(
            "warning",
            format!(
                "{} 个选区待选举委员会处理（下一轮投票、委员会决定或缺额）：{}{} · contests that need the committee",
                open.len(),
                open.iter()
                    .take(ALERT_NAMES_MAX)
                    .copied()
                    .collect::<Vec<_>>()
                    .join("、"),
                if open.len() > ALERT_NAMES_MAX {
                    " …"
                } else {
                    ""
                }
            ),
        );
    }

    let confirmed = result
        .contests
        .iter()
        .filter(|c| c.confirmed.is_some())
        .count();
    let after_lock: usize = result.contests.iter().map(|c| c.after_lock.len()).sum();
    let blocking = at.matters.iter().filter(|m| m.blocking).count();
    if after_lock > 0 {
        alert(
            "warning",
            format!(
                "{after_lock} 份计票单在选区确认后送达（未计入，除非委员会重新开启该选区）· sheets arrived after a contest was confirmed"
            ),
        );
    }
    json!({
        "committee": {
            "contests": result.contests.len(),
            "confirmed": confirmed,
            "waiting": at.matters.len(),
            "blocking": blocking,
            "after_lock": after_lock,
        },
        "election": result.election,
        "election_id": status.election_id,
        "mode": status.mode,
        "mode_banner": tally_core::definition::Mode::banner_of(&status.mode),
        "definition_digest": status.definition_digest,
        "amendments": status.amendments,
        "zero_report_log_index": status.zero_report_log_index,
        "county": {
            "id": county_id,
            "name": result.county.name,
            "all": summary_json(&result.county.all),
            "county_level": summary_json(&result.county.county_level),
            "township_level": summary_json(&result.county.township_level),
        },
        "townships": result.townships.iter().map(|t| json!({
            "id": t.township.as_str(),
            "name": t.name,
            "county_level": summary_json(&t.county_level),
            "township_level": summary_json(&t.township_level),
        })).collect::<Vec<_>>(),
        "contests": contests,
        "conflicts": at.conflicts.iter().map(|c| json!({
            "unit": c.unit_id, "contest": c.contest_id, "round": c.round, "version": c.version,
            "log_index": c.log_index,
        })).collect::<Vec<_>>(),
        "sheets": {
            "accepted": shared.sheets.total("accepted"),
            "duplicate": shared.sheets.total("duplicate"),
            "conflict": shared.sheets.total("conflict"),
            "superseded": shared.sheets.total("superseded"),
            "refused": shared.sheets.total("refused"),
            "signature_failures": bad_signatures,
            "counted": status.sheets_counted,
            "chain_length": at.chain.length,
        },
        "replica": {
            "id": status.replica_id,
            "role": status.role,
            "term": status.term,
            "leader": status.leader_id,
            "applied_index": status.applied_index,
            "log_index": at.chain.log_index,
            "chain_head": hex::encode(at.chain.head),
        },
        "replicas": replicas,
        "alerts": alerts,
    })
}
