//! `tally amend`: the committee amends the definition on the night (docs/design/record.md).
//! A clerk prepares the amendment file; each official signs it on their own machine with
//! their own key; once k have signed, an operator submits it to the county, which checks it
//! against the definition in force and records it.

use crate::client::{ClientArgs, channel, client_config, operator_files, runtime};
use crate::outcome::Outcome;
use crate::say;
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use tally_core::act::{ActBody, ActFile, Amendment, Change, amend, check, describe};
use tally_core::definition::{Definition, UnitKind};
use tally_core::ids::{CandidateId, ContestId, TownshipId, UnitId};
use tally_files::{load_definition, read_secret_key};
use tally_rpc::pb;
use tally_rpc::pb::county_client::CountyClient;

#[derive(Subcommand)]
pub enum AmendCommand {
    /// Prepare: replace a polling unit's key (its device broke or was lost). Sheets recorded
    /// before stand; from the amendment on, the old key is refused (E214).
    ReplaceKey {
        #[command(flatten)]
        prepare: PrepareArgs,
        /// The unit, e.g. T01-U004.
        #[arg(long)]
        unit: String,
        /// The new public key (64 hex digits, as `tally keygen` prints it).
        #[arg(long)]
        public_key: String,
    },
    /// Prepare: add a polling unit (a mobile ballot box added on the day).
    AddUnit {
        #[command(flatten)]
        prepare: PrepareArgs,
        /// The new unit's id, e.g. T01-M09.
        #[arg(long)]
        unit: String,
        #[arg(long)]
        name: String,
        /// station, assembly or mobile-box.
        #[arg(long, default_value = "mobile-box")]
        kind: String,
        #[arg(long)]
        township: String,
        /// The contests it serves, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        contests: Vec<String>,
        /// Its public key (64 hex digits, as `tally keygen` prints it).
        #[arg(long)]
        public_key: String,
    },
    /// Prepare: correct a contest's registered voters.
    RegisteredVoters {
        #[command(flatten)]
        prepare: PrepareArgs,
        #[arg(long)]
        contest: String,
        #[arg(long)]
        voters: u64,
    },
    /// Prepare: withdraw a candidate before polling (refused once a sheet of the contest is
    /// recorded).
    WithdrawCandidate {
        #[command(flatten)]
        prepare: PrepareArgs,
        #[arg(long)]
        contest: String,
        #[arg(long)]
        candidate: String,
    },
    #[command(flatten)]
    Act(ActCommand),
}

/// What officials and operators do with any act file: look, sign, submit.
#[derive(Subcommand)]
pub enum ActCommand {
    /// Show an act file in plain words and whose signatures it carries.
    Show {
        /// The act file.
        file: PathBuf,
        #[arg(long, short)]
        definition: PathBuf,
    },
    /// Sign an act file as one official, offline, with your own key.
    Sign {
        /// The act file; your signature is added to it.
        file: PathBuf,
        #[arg(long, short)]
        definition: PathBuf,
        /// Your id in the definition's [[committee.officials]].
        #[arg(long)]
        official: String,
        /// Your secret key file (from `tally keygen`).
        #[arg(long, short)]
        key: PathBuf,
    },
    /// Submit an act file with at least k signatures to the county (as an operator).
    Submit {
        /// The act file.
        file: PathBuf,
        #[arg(long, short)]
        definition: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
        /// The operator certificate to use (operator-NAME.pem in --pki).
        #[arg(long, default_value = "operator")]
        operator: String,
    },
}

#[derive(Args)]
pub struct PrepareArgs {
    /// The election definition the county was founded with (TOML).
    #[arg(long, short)]
    definition: PathBuf,
    /// The amendment's id, the committee's own number for it, e.g. A-003 (used once).
    #[arg(long)]
    id: String,
    /// Why, in the committee's words; reports print it.
    #[arg(long)]
    reason: String,
    /// The amendment file to write (new).
    #[arg(long, short)]
    out: PathBuf,
}

pub fn run(command: AmendCommand) -> Result<Outcome> {
    match command {
        AmendCommand::ReplaceKey {
            prepare,
            unit,
            public_key,
        } => prepare_file(
            &prepare,
            Change::ReplaceKey {
                unit: UnitId::new(unit),
                public_key,
            },
        ),
        AmendCommand::AddUnit {
            prepare,
            unit,
            name,
            kind,
            township,
            contests,
            public_key,
        } => {
            let kind: UnitKind = serde_json::from_value(serde_json::Value::String(kind.clone()))
                .map_err(|_| {
                    anyhow!(
                        "--kind {kind:?} is not a kind of unit: station, assembly or mobile-box"
                    )
                })?;
            prepare_file(
                &prepare,
                Change::AddUnit {
                    id: UnitId::new(unit),
                    name,
                    kind,
                    township: TownshipId::new(township),
                    contests: contests.into_iter().map(ContestId::new).collect(),
                    public_key,
                },
            )
        }
        AmendCommand::RegisteredVoters {
            prepare,
            contest,
            voters,
        } => prepare_file(
            &prepare,
            Change::RegisteredVoters {
                contest: ContestId::new(contest),
                registered_voters: voters,
            },
        ),
        AmendCommand::WithdrawCandidate {
            prepare,
            contest,
            candidate,
        } => prepare_file(
            &prepare,
            Change::WithdrawCandidate {
                contest: ContestId::new(contest),
                candidate: CandidateId::new(candidate),
            },
        ),
        AmendCommand::Act(command) => act(command),
    }
}

/// `tally zero-report`: the official count starts from a report of every contest at zero,
/// signed by k officials before the first sheet (docs/design/record.md).
#[derive(Subcommand)]
pub enum ZeroReportCommand {
    /// Prepare the zero report from the county's definition (and the amendments it recorded
    /// so far), and print it.
    Prepare {
        /// The election definition the county was founded with (TOML).
        #[arg(long, short)]
        definition: PathBuf,
        /// An amendment the county recorded before the report; repeat in order.
        #[arg(long = "amendment")]
        amendments: Vec<PathBuf>,
        /// The act file to write (new).
        #[arg(long, short)]
        out: PathBuf,
    },
    #[command(flatten)]
    Act(ActCommand),
}

pub fn zero_report(command: ZeroReportCommand) -> Result<Outcome> {
    match command {
        ZeroReportCommand::Prepare {
            definition: path,
            amendments,
            out,
        } => {
            let definition = tally_files::load_amended(&path, &amendments)?;
            let Some(committee) = &definition.committee else {
                bail!(
                    "{} names no committee ([committee] with its officials and threshold), so nobody can sign its zero report",
                    path.display()
                );
            };
            let file = ActFile::new(ActBody::ZeroReport(tally_core::act::zero_report(
                &definition,
            )));
            write_new(&out, &file.text())?;
            if definition.election.mode != tally_core::definition::Mode::Official {
                say!(
                    "【{}】 a rehearsal counts without a zero report; this one is for practice",
                    tally_core::definition::Mode::Rehearsal.banner()
                );
            }
            for c in tally_core::act::zero_contests(&definition) {
                say!(
                    "  {} {}: {} seat(s), {} registered voters, {} of {} units reported, {} ballots; {}",
                    c.contest,
                    c.name,
                    c.seats,
                    c.registered_voters,
                    c.units_reported,
                    c.units_expected,
                    c.ballots_collected,
                    c.candidates
                        .iter()
                        .map(|x| format!("{} {}", x.name, x.votes))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            for line in describe(&file.act) {
                say!("{line}");
            }
            say!(
                "wrote {}; next: {} official(s) sign it (`tally zero-report sign {} --definition {} --official ID --key KEY`), then `tally zero-report submit` before the first sheet",
                out.display(),
                committee.threshold,
                out.display(),
                path.display()
            );
            Ok(Outcome::Clean)
        }
        ZeroReportCommand::Act(command) => act(command),
    }
}

pub(crate) fn act(command: ActCommand) -> Result<Outcome> {
    match command {
        ActCommand::Show { file, definition } => {
            let definition = load_definition(&definition)?;
            let act = read_act(&file)?;
            show(&definition, &act);
            Ok(Outcome::Clean)
        }
        ActCommand::Sign {
            file,
            definition,
            official,
            key,
        } => sign(&file, &definition, &official, &key),
        ActCommand::Submit {
            file,
            definition,
            client,
            operator,
        } => submit(&file, &definition, &client, &operator),
    }
}

/// Writes a new amendment file with one change, after checking it against the definition
/// file (the county checks it again against the definition in force when it is submitted).
fn prepare_file(args: &PrepareArgs, change: Change) -> Result<Outcome> {
    let definition = load_definition(&args.definition)?;
    let amendment = Amendment {
        election: definition.election.id.clone(),
        mode: definition.election.mode,
        id: args.id.clone(),
        reason: args.reason.clone(),
        changes: vec![change],
    };
    if let Err(e) = amend(&definition, &amendment, 0, &|_| false) {
        bail!("{e}\nno amendment file was written: correct the arguments and prepare it again");
    }
    if definition.committee.is_none() {
        bail!(
            "{} names no committee ([committee] with its officials and threshold), so nobody can sign an amendment of it",
            args.definition.display()
        );
    }
    let file = ActFile::new(ActBody::Amendment(amendment));
    write_new(&args.out, &file.text())?;
    say!("wrote {}:", args.out.display());
    for line in describe(&file.act) {
        say!("  {line}");
    }
    let k = definition.committee.as_ref().map_or(0, |c| c.threshold);
    say!(
        "next: {k} official(s) sign it, each with `tally amend sign {} --definition {} --official ID --key KEY`; then `tally amend submit`",
        args.out.display(),
        args.definition.display()
    );
    Ok(Outcome::Clean)
}

pub(crate) fn write_new(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {} (an amendment file is written once; choose a new name)",
                path.display()
            )
        })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn read_act(path: &Path) -> Result<ActFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the amendment file {}", path.display()))?;
    ActFile::parse(&path.display().to_string(), &text).map_err(|e| anyhow!(e))
}

/// The act in plain words and the state of its signatures.
fn show(definition: &Definition, file: &ActFile) {
    for line in describe(&file.act) {
        say!("{line}");
    }
    let k = tally_core::act::committee_for(definition, &file.act).map_or(0, |(c, _)| c.threshold);
    let signed: Vec<&str> = file
        .signatures
        .iter()
        .map(|s| s.official.as_str())
        .collect();
    say!(
        "signed by {} of the {k} needed: {}",
        signed.len(),
        if signed.is_empty() {
            "nobody yet".to_owned()
        } else {
            signed.join(", ")
        }
    );
    if let Ok(act) = file.signed()
        && let Err(e) = check(definition, &act)
    {
        say!("not ready to submit:\n{e}");
    }
}

fn sign(path: &Path, definition: &Path, official: &str, key: &Path) -> Result<Outcome> {
    let definition = load_definition(definition)?;
    let mut file = read_act(path)?;
    let key = read_secret_key(key)?;
    let (committee, whose) =
        tally_core::act::committee_for(&definition, &file.act).map_err(|e| anyhow!("{e}"))?;
    let Some(member) = committee.official(official) else {
        bail!(
            "{official} is not an official of {whose}, whose act this is; it names {}",
            committee
                .officials
                .iter()
                .map(|o| o.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    if member.public_key != key.verifying_key() {
        bail!(
            "the key is not official {official}'s (its key id is {}, the definition's is {}); sign with your own key",
            tally_core::ids::KeyId::of(&key.verifying_key()),
            member.key_id
        );
    }
    let (election, mode) = file.act.election();
    if (election, mode) != (definition.election.id.as_str(), definition.election.mode) {
        bail!(
            "{} is for election {election} ({mode}), not for {} ({}); nothing was signed",
            file.act.label(),
            definition.election.id,
            definition.election.mode
        );
    }
    say!("signing, as {} ({}):", member.id, member.name);
    for line in describe(&file.act) {
        say!("  {line}");
    }
    file.sign(official, &key);
    tally_files::write_atomic(path, file.text().as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    say!(
        "signed: {} signature(s) of the {} needed",
        file.signatures.len(),
        committee.threshold
    );
    Ok(Outcome::Clean)
}

fn submit(
    path: &Path,
    definition_path: &Path,
    client: &ClientArgs,
    operator: &str,
) -> Result<Outcome> {
    let definition = load_definition(definition_path)?;
    let file = read_act(path)?;
    let act = file
        .signed()
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    check(&definition, &act).map_err(|e| anyhow!("{e}\n{} was not submitted", path.display()))?;
    let digest = tally_core::canonical::digest(&definition).to_string();
    let files = operator_files(&client.pki, operator)?;
    let response = runtime()?.block_on(async {
        let tls = client_config(&files)?;
        let mut errors = Vec::new();
        for address in &client.servers {
            let mut county = CountyClient::new(channel(&tls, address)?);
            let request = pb::AmendRequest {
                definition_digest: digest.clone(),
                body: act.body.clone(),
                signatures: tally_proto::county::act_to_pb(&act).signatures,
            };
            match county.amend(request).await {
                Ok(response) => return Ok(response.into_inner()),
                // The county answered: the act itself is refused; another replica would say
                // the same.
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::InvalidArgument
                            | tonic::Code::FailedPrecondition
                            | tonic::Code::PermissionDenied
                    ) =>
                {
                    return Err(anyhow!(
                        "the county refused {} ({}):\n{}",
                        path.display(),
                        file.act.label(),
                        status.message()
                    ));
                }
                Err(status) => errors.push(format!("{address}: {}", status.message())),
            }
        }
        Err(anyhow!(
            "no replica recorded the act (it may have been recorded if a replica went away while answering: submitting it again says so):\n  {}",
            errors.join("\n  ")
        ))
    })?;
    say!(
        "{} recorded at log index {}, chain head {}",
        file.act.label(),
        response.log_index,
        hex::encode(&response.chain_head)
    );
    for change in &response.changes {
        say!("  {change}");
    }
    Ok(Outcome::Clean)
}
