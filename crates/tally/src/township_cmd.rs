//! `tally township`: run a township aggregator (`--config township.toml`), import sheets that
//! arrived offline (`import`), and show the township's picture (`picture`).

use crate::client::{init_logging, runtime, shutdown_signal};
use crate::outcome::Outcome;
use crate::{say, say_part};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tally_net::{Identity, Role, TlsFiles};
use tally_rpc::pb;
use tally_rpc::pb::sheet_outcome::Kind;
use tally_rpc::pb::township_client::TownshipClient;
use tally_table::{Align, Table};
use tally_township::config::TownshipConfig;
use tally_township::server;
use tally_township::township::SUBMIT_SHEETS_MAX;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TownshipArgs {
    /// The aggregator's config file (see docs/design/township.md); runs the aggregator.
    #[arg(long, short, required = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<TownshipCommand>,
}

#[derive(Subcommand)]
pub enum TownshipCommand {
    /// Import signed sheets carried from a polling place (a .sheets bundle, a file of QR
    /// payloads, or a PNG of a QR code), with the same checks as a unit's own submit.
    Import {
        /// The township aggregator's config file: the aggregator is reached at its `listen`
        /// address with the township's own certificate.
        #[arg(long, short)]
        config: PathBuf,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// What the township has: units reported, the outbox, provisional results, warnings and
    /// refused sheets. Exits 3 when the outbox is not empty, a sheet was refused, or its disk failed.
    Picture {
        /// The township aggregator's config file (the clerk at the township).
        #[arg(long, short, conflicts_with_all = ["server", "pki"], required_unless_present = "server")]
        config: Option<PathBuf>,
        /// An operator: the aggregator's host:port (with --pki and --operator).
        #[arg(long, requires = "pki")]
        server: Option<String>,
        /// The folder with ca.pem and the operator's certificate.
        #[arg(long, env = "TALLY_PKI")]
        pki: Option<PathBuf>,
        /// The operator certificate to use (operator-NAME.pem in --pki).
        #[arg(long, default_value = "operator")]
        operator: String,
        #[arg(long, value_enum, default_value_t = crate::report::Format::Table)]
        format: crate::report::Format,
    },
}

pub fn run(args: TownshipArgs) -> Result<Outcome> {
    match args.command {
        Some(TownshipCommand::Import { config, files }) => import(&config, &files),
        Some(TownshipCommand::Picture {
            config,
            server,
            pki,
            operator,
            format,
        }) => picture(config.as_deref(), server, pki, &operator, format),
        None => {
            let config = args
                .config
                .ok_or_else(|| anyhow!("give --config township.toml"))?;
            serve(&config)
        }
    }
}

/// `tally township --config township.toml`: checks the config, the key and the certificate
/// first, then serves until SIGTERM or Ctrl-C, and stops within about two seconds.
pub fn serve(config_path: &Path) -> Result<Outcome> {
    let config = TownshipConfig::load(config_path).map_err(|e| anyhow!("{e}"))?;
    let file = config.file.display().to_string();
    let prepared = server::prepare(&config).map_err(|e| anyhow!("{file}: {e}"))?;
    init_logging();
    runtime()?.block_on(async move {
        let listener = server::bind(prepared.listen)
            .await
            .map_err(|e| anyhow!("{file}: {e}"))?;
        // Bound before the aggregator starts, so a taken port is an error at start.
        let http = match prepared.http_listen {
            Some(address) => Some(tokio::net::TcpListener::bind(address).await.with_context(|| {
                format!("{file}: http_listen = {address}: cannot bind (is another program using the port?)")
            })?),
            None => None,
        };
        let mut running = server::start(prepared.setup, prepared.server_tls, listener)
            .map_err(|e| anyhow!("{file}: {e}"))?;
        if let Some(listener) = http {
            tracing::info!(township = %config.township_id, address = %listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()), "serving GET /metrics over HTTP");
            running.serve_http(listener);
        }
        shutdown_signal().await;
        tracing::info!(township = %config.township_id, "stopping");
        running.stop().await;
        Ok(Outcome::Clean)
    })
}

/// The address the township's own tools dial: its `listen` address, or the loopback address
/// when it listens on every address (its certificate always carries 127.0.0.1).
fn own_address(listen: SocketAddr) -> String {
    let ip = if listen.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else if listen.is_ipv6() {
        format!("[{}]", listen.ip())
    } else {
        listen.ip().to_string()
    };
    format!("{ip}:{}", listen.port())
}

fn channel(tls: &ClientTlsConfig, address: &str) -> Result<Channel> {
    Ok(Endpoint::from_shared(format!("https://{address}"))
        .with_context(|| format!("{address} is not host:port"))?
        .tls_config(
            tls.clone()
                .domain_name(tally_township::forward::host_of(address)),
        )?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .connect_lazy())
}

/// A client of the township's own aggregator, with the township's own certificate.
fn own_client(config: &TownshipConfig) -> Result<(TownshipClient<Channel>, String)> {
    let (tls, identity) = config
        .tls
        .client_tls("localhost")
        .map_err(|e| anyhow!("{}: [tls]: {e}", config.file.display()))?;
    if identity.role() != Role::Township || identity.name() != config.township_id.as_str() {
        bail!(
            "{}: [tls] cert {} is {identity}'s certificate, not township {}'s",
            config.file.display(),
            config.tls.cert.display(),
            config.township_id
        );
    }
    let address = own_address(config.listen);
    let client = TownshipClient::new(channel(&tls, &address)?).max_decoding_message_size(64 << 20);
    Ok((client, address))
}

fn unreachable(address: &str, status: &tonic::Status) -> anyhow::Error {
    anyhow!(
        "the township aggregator at {address} did not answer ({}); is `tally township --config ...` running?",
        status.message()
    )
}

/// Whether an UNAVAILABLE (or UNKNOWN, CANCELLED) status is the aggregator's own answer (its
/// disk failed, it is shutting down: its messages begin with "the township"), not the
/// transport's (no connection), so the clerk is told what happened rather than asked whether
/// it runs.
fn answered_by_township(status: &tonic::Status) -> bool {
    status.message().starts_with("the township")
}

/// `tally township import --config township.toml FILE...`.
fn import(config_path: &Path, files: &[PathBuf]) -> Result<Outcome> {
    let config = TownshipConfig::load(config_path).map_err(|e| anyhow!("{e}"))?;
    let mut bundles = Vec::new();
    for path in files {
        let sheets = tally_village::offline::read_offline(path)?;
        if sheets.is_empty() {
            bail!("{} holds no signed sheets", path.display());
        }
        bundles.push((path.clone(), sheets));
    }
    runtime()?.block_on(async move {
        let (mut client, address) = own_client(&config)?;
        let mut findings = false;
        let mut counts = [0usize; 5];
        for (path, sheets) in &bundles {
            let source = path
                .file_name()
                .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
            for (chunk_index, chunk) in sheets.chunks(SUBMIT_SHEETS_MAX).enumerate() {
                let request = pb::SubmitRequest {
                    sheets: chunk.iter().map(tally_proto::SignedSheet::to_pb).collect(),
                    source: source.clone(),
                };
                let outcomes = match client.import(request).await {
                    Ok(r) => r.into_inner().outcomes,
                    // A full disk (RESOURCE_EXHAUSTED), a failed one, a full outbox: the
                    // township answered, and stored nothing of this call.
                    Err(status)
                        if status.code() == tonic::Code::ResourceExhausted
                            || answered_by_township(&status) =>
                    {
                        let first = chunk_index * SUBMIT_SHEETS_MAX + 1;
                        bail!(
                            "{}: the township stored nothing from sheet #{first} on: {}; run the same import again then (sheets already stored are answered duplicate)",
                            path.display(),
                            status.message()
                        );
                    }
                    Err(status)
                        if matches!(
                            status.code(),
                            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                        ) =>
                    {
                        return Err(unreachable(&address, &status));
                    }
                    Err(status) => bail!(
                        "{}: the township refused the import: {} ({:?})",
                        path.display(),
                        status.message(),
                        status.code()
                    ),
                };
                for (i, (signed, outcome)) in chunk.iter().zip(&outcomes).enumerate() {
                    let number = chunk_index * SUBMIT_SHEETS_MAX + i + 1;
                    let kind = Kind::try_from(outcome.kind).unwrap_or(Kind::Unspecified);
                    let label = tally_proto::decode_sheet(&signed.sheet)
                        .map_or_else(|_| "a sheet that does not decode".to_owned(), |s| s.label());
                    let digest = &outcome.digest[..12.min(outcome.digest.len())];
                    let name = kind.as_str_name().to_ascii_lowercase();
                    match kind {
                        Kind::Accepted | Kind::Duplicate | Kind::Superseded => {
                            say!("{} #{number}: {name}: {label} ({digest})", path.display());
                        }
                        _ => {
                            findings = true;
                            say!(
                                "{} #{number}: {name} {}: {label} ({digest}): {}",
                                path.display(),
                                outcome.code,
                                outcome.message
                            );
                        }
                    }
                    for warning in &outcome.warnings {
                        say!("    warning {warning}");
                    }
                    let slot = match kind {
                        Kind::Accepted => 0,
                        Kind::Duplicate => 1,
                        Kind::Superseded => 2,
                        Kind::Conflict => 3,
                        Kind::Refused | Kind::Unspecified => 4,
                    };
                    counts[slot] += 1;
                }
            }
        }
        say!(
            "imported into township {}: accepted {}, duplicate {}, superseded {}, conflict {}, refused {}",
            config.township_id,
            counts[0],
            counts[1],
            counts[2],
            counts[3],
            counts[4]
        );
        Ok(if findings {
            Outcome::Findings
        } else {
            Outcome::Clean
        })
    })
}

/// `tally township picture`.
fn picture(
    config: Option<&Path>,
    server: Option<String>,
    pki: Option<PathBuf>,
    operator: &str,
    format: crate::report::Format,
) -> Result<Outcome> {
    runtime()?.block_on(async move {
        let (mut client, address) = match (config, server) {
            (Some(config), _) => {
                let config = TownshipConfig::load(config).map_err(|e| anyhow!("{e}"))?;
                own_client(&config)?
            }
            (None, Some(server)) => {
                let pki = pki.ok_or_else(|| anyhow!("--server needs --pki"))?;
                let identity = Identity::new(Role::Operator, operator)
                    .map_err(|e| anyhow!("--operator: {e}"))?;
                let (tls, _) = TlsFiles::in_dir(&pki, &identity)
                    .client_tls("localhost")
                    .map_err(|e| anyhow!("{e}"))?;
                let client = TownshipClient::new(channel(&tls, &server)?)
                    .max_decoding_message_size(64 << 20);
                (client, server)
            }
            (None, None) => bail!("give --config township.toml, or --server with --pki"),
        };
        let p = match client.picture(pb::PictureRequest {}).await {
            Ok(r) => r.into_inner(),
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                ) =>
            {
                return Err(unreachable(&address, &status));
            }
            Err(status) => bail!("{address}: {} ({:?})", status.message(), status.code()),
        };
        print_picture(&p, format)?;
        let outbox = p.outbox.clone().unwrap_or_default();
        Ok(
            if outbox.depth > 0 || !p.refused.is_empty() || !p.storage_error.is_empty() {
                Outcome::Findings
            } else {
                Outcome::Clean
            },
        )
    })
}

fn note_json(n: &pb::SheetNote) -> serde_json::Value {
    serde_json::json!({
        "unit": n.unit_id, "contest": n.contest_id, "round": n.round, "version": n.version,
        "digest": n.digest, "refused_by": n.refused_by, "code": n.code,
        "messages": n.messages, "received_unix_ms": n.received_unix_ms,
    })
}

fn print_picture(p: &pb::PictureResponse, format: crate::report::Format) -> Result<()> {
    let outbox = p.outbox.clone().unwrap_or_default();
    if format == crate::report::Format::Json {
        let result: serde_json::Value =
            serde_json::from_str(&p.result_json).unwrap_or(serde_json::Value::Null);
        let json = serde_json::json!({
            "township": p.township_id,
            "name": p.township_name,
            "units_reported": p.units_reported,
            "units_expected": p.units_expected,
            "sheets_stored": p.sheets_stored,
            "sheets_counted": p.sheets_counted,
            "storage_error": p.storage_error,
            "outbox": {
                "depth": outbox.depth,
                "oldest_age_ms": outbox.oldest_age_ms,
                "capacity": outbox.capacity,
                "forwarded": outbox.forwarded,
                "county_reachable": outbox.county_reachable,
                "last_success_unix_ms": outbox.last_success_unix_ms,
                "last_error": outbox.last_error,
                "county_leader_id": outbox.county_leader_id,
                "county_log_index": outbox.county_log_index,
                "county_chain_head": hex::encode(&outbox.county_chain_head),
            },
            "warnings": p.warnings.iter().map(note_json).collect::<Vec<_>>(),
            "refused": p.refused.iter().map(note_json).collect::<Vec<_>>(),
            "result": result,
        });
        say!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    say!(
        "township {} {}: {} of {} units reported; {} sheets stored, {} counted",
        p.township_id,
        p.township_name,
        p.units_reported,
        p.units_expected,
        p.sheets_stored,
        p.sheets_counted
    );
    if !p.storage_error.is_empty() {
        say!(
            "STORAGE FAILED: {}; nothing is stored or forwarded until the database opens again (tried at every submit)",
            p.storage_error
        );
    }
    let age = if outbox.depth > 0 {
        format!(
            ", the oldest waiting {:.1} s",
            outbox.oldest_age_ms as f64 / 1000.0
        )
    } else {
        String::new()
    };
    say!(
        "outbox: {} waiting{age} (capacity {}); {} forwarded to the county",
        outbox.depth,
        outbox.capacity,
        outbox.forwarded
    );
    if outbox.county_reachable {
        say!(
            "county: reachable; last answer from replica {}, log index {}, chain head {}",
            outbox.county_leader_id,
            outbox.county_log_index,
            hex::encode(&outbox.county_chain_head[..outbox.county_chain_head.len().min(8)])
        );
    } else if !outbox.last_error.is_empty() {
        say!("county: NOT reachable: {}", outbox.last_error);
    } else if outbox.forwarded > 0 {
        say!("county: not contacted since the aggregator started (nothing to forward)");
    } else {
        say!("county: not contacted yet");
    }
    let mut table = Table::new(&[
        ("contest", Align::Left),
        ("name", Align::Left),
        ("level", Align::Left),
        ("seats", Align::Right),
        ("units", Align::Right),
        ("status", Align::Left),
        ("elected (votes)", Align::Left),
    ]);
    for c in &p.contests {
        let mut elected: Vec<String> = c
            .elected
            .iter()
            .map(|e| format!("{} ({})", e.name, tally_table::thousands(e.votes)))
            .collect();
        if c.vacancies > 0 {
            elected.push(format!("{} seat(s) vacant", c.vacancies));
        }
        table.row(vec![
            c.contest_id.clone(),
            c.name.clone(),
            c.level.clone(),
            format!("{}/{}", c.seats_filled, c.seats),
            format!("{}/{}", c.units_reported, c.units_expected),
            c.status.clone(),
            elected.join(", "),
        ]);
    }
    if format == crate::report::Format::Csv {
        say_part!("{}", table.to_csv());
        return Ok(());
    }
    say!("provisional results (from the sheets stored here; the county's are the legal ones):");
    say_part!("{}", table.render());
    for n in &p.warnings {
        say!(
            "warning: unit {} contest {} round {} version {} ({}): {}",
            n.unit_id,
            n.contest_id,
            n.round,
            n.version,
            &n.digest[..12.min(n.digest.len())],
            n.messages.join("; ")
        );
    }
    for n in &p.refused {
        say!(
            "refused by the {}: {} unit {} contest {} round {} version {} ({}): {}",
            n.refused_by,
            n.code,
            n.unit_id,
            n.contest_id,
            n.round,
            n.version,
            &n.digest[..12.min(n.digest.len())],
            n.messages.join("; ")
        );
    }
    for m in &p.refused_not_listed {
        say!("{}", not_listed_line(m));
    }
    Ok(())
}

/// "… and 1,008 more refusals from T01-U003": the notes the township kept no room for.
fn not_listed_line(m: &tally_rpc::pb::NotesNotListed) -> String {
    let count = |n: u64, one: &str, many: &str| {
        format!(
            "{} more {}",
            tally_table::thousands(n),
            if n == 1 { one } else { many }
        )
    };
    let mut parts = Vec::new();
    if m.refusals > 0 {
        parts.push(count(m.refusals, "refusal", "refusals"));
    }
    if m.conflicts > 0 {
        parts.push(count(m.conflicts, "conflict", "conflicts"));
    }
    let from = if m.unit_id.is_empty() {
        "sheets that name no unit of this township".to_owned()
    } else {
        m.unit_id.clone()
    };
    format!("… and {} from {from}", parts.join(" and "))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the picture says, per unit, how many refusals and conflicts it does not list.
    // Method: render the line for a flooding unit, one of each, and sheets naming no unit.
    #[test]
    fn not_listed_lines() {
        let line = |unit: &str, refusals: u64, conflicts: u64| {
            not_listed_line(&tally_rpc::pb::NotesNotListed {
                unit_id: unit.into(),
                refusals,
                conflicts,
            })
        };
        assert_eq!(
            line("T01-U003", 1_008, 0),
            "… and 1,008 more refusals from T01-U003"
        );
        assert_eq!(
            line("T01-U001", 1, 1),
            "… and 1 more refusal and 1 more conflict from T01-U001"
        );
        assert_eq!(
            line("", 2, 0),
            "… and 2 more refusals from sheets that name no unit of this township"
        );
    }
}
