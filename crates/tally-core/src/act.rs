//! The committee's acts (docs/design/record.md): what the county election committee decides
//! during the night, signed by k of its n officials, each with their own key, offline.
//!
//! An act is a JSON body in its canonical encoding (compact, keys sorted, every field
//! written) and the officials' signatures over `"tally.v2.CommitteeAct\0" || body`. The body
//! names the election and its mode, so an act signed for a rehearsal never applies to the
//! real night; an amendment names its own id, so the same amendment applied twice is refused.
//!
//! The first kind is the **amendment** of the definition: replace a unit's key, add a polling
//! unit, correct a contest's registered voters, withdraw a candidate before polling.
//! [`amend`] applies one to the definition in force and checks the result as the loader
//! checks a file (every problem at once); the record applies amendments in log order, so the
//! definition in force at log index *i* is the founding one plus the amendments up to *i*.
//!
//! No I/O: the county, the township and `tally verify` all call the same functions.

use crate::Error;
use crate::definition::{
    AmendmentNote, Committee, Definition, DefinitionProblem, Election, Mode, PollingUnit,
    RetiredKey, UnitKind, parse_public_key,
};
use crate::ids::{CandidateId, ContestId, KeyId, TownshipId, UnitId, check_id};
use crate::validate::Code;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The domain separation prefix of an official's signature over an act's body.
pub const ACT_SIGNATURE_DOMAIN: &[u8] = b"tally.v2.CommitteeAct\0";

/// The domain separation prefix of an act's digest in the hash chain.
pub const ACT_LINK_DOMAIN: &[u8] = b"tally.v2.committee-act\0";

/// Signatures an act may carry (a committee is a handful of people).
pub const SIGNATURES_MAX: usize = 64;

/// What an act says, as its officials signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ActBody {
    Amendment(Amendment),
    ZeroReport(ZeroReport),
    /// A decision on what the count leaves open (docs/design/committee.md).
    Decision(Box<crate::committee::Decision>),
    /// Contests' results determined valid, and locked.
    Confirmation(crate::committee::Confirmation),
    /// A confirmed contest reopened, with the reason.
    Reopening(crate::committee::Reopening),
}

impl ActBody {
    /// The canonical encoding: compact JSON, keys sorted. What the officials sign.
    pub fn encode(&self) -> Vec<u8> {
        let value = serde_json::to_value(self).expect("an act always converts to JSON");
        serde_json::to_vec(&value).expect("an act always encodes")
    }

    /// The body of the canonical bytes `body`; bytes that are not canonical are refused, so
    /// one act has exactly one encoding (and one digest).
    pub fn decode(body: &[u8]) -> Result<ActBody, String> {
        let act: ActBody = serde_json::from_slice(body)
            .map_err(|e| format!("the act's body is not an act: {e}"))?;
        if act.encode() != body {
            return Err("the act's body is not in the canonical encoding (compact JSON, keys sorted); prepare it with `tally amend`".into());
        }
        Ok(act)
    }

    pub fn election(&self) -> (&str, Mode) {
        match self {
            ActBody::Amendment(a) => (&a.election, a.mode),
            ActBody::ZeroReport(z) => (&z.election, z.mode),
            ActBody::Decision(d) => (&d.election, d.mode),
            ActBody::Confirmation(c) => (&c.election, c.mode),
            ActBody::Reopening(r) => (&r.election, r.mode),
        }
    }

    /// The act's own id: the committee's number for it (`zero-report` for the zero report).
    pub fn id(&self) -> &str {
        match self {
            ActBody::Amendment(a) => &a.id,
            ActBody::ZeroReport(_) => "zero-report",
            ActBody::Decision(d) => &d.id,
            ActBody::Confirmation(c) => &c.id,
            ActBody::Reopening(r) => &r.id,
        }
    }

    /// `amendment A-003`, `the zero report`.
    pub fn label(&self) -> String {
        match self {
            ActBody::Amendment(a) => format!("amendment {}", a.id),
            ActBody::ZeroReport(_) => "the zero report".to_owned(),
            ActBody::Decision(d) => format!("decision {}", d.id),
            ActBody::Confirmation(c) => format!("confirmation {}", c.id),
            ActBody::Reopening(r) => format!("reopening {}", r.id),
        }
    }
}

/// An amendment of the definition, applied as a whole or not at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Amendment {
    /// The election it amends: its id and mode.
    pub election: String,
    pub mode: Mode,
    /// The committee's own number for it, e.g. `A-003`; an id is applied once.
    pub id: String,
    /// Why, in the committee's words; results and reports print it.
    pub reason: String,
    pub changes: Vec<Change>,
}

/// The zero report (TSE's zerésima): before the first sheet of an official election, the
/// committee signs that every contest of the definition in force stands at zero. The report
/// itself ([`zero_contests`], every contest) is printed for the officials and follows from
/// the definition; the act they sign carries its digest, so it stays small for a county of
/// any size. The record takes it only when it is exactly [`zero_report`] of the definition in
/// force and no sheet is recorded yet; an official election counts no sheet before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZeroReport {
    pub election: String,
    pub mode: Mode,
    /// The digest of the definition in force (tally_core::canonical), hex.
    pub definition_digest: String,
    /// How many contests the report lists.
    pub contests: u64,
    /// `SHA-256("tally.v2.zero-report\0" || canonical JSON of every contest at zero)`, hex.
    pub report_digest: String,
}

/// The domain separation prefix of [`ZeroReport::report_digest`].
pub const ZERO_REPORT_DOMAIN: &[u8] = b"tally.v2.zero-report\0";

/// One contest at zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZeroContest {
    pub contest: ContestId,
    pub name: String,
    pub seats: u32,
    pub registered_voters: u64,
    pub units_expected: u64,
    pub units_reported: u64,
    pub ballots_collected: u64,
    pub candidates: Vec<ZeroCandidate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZeroCandidate {
    pub candidate: CandidateId,
    pub name: String,
    pub votes: u64,
}

/// The zero report's act for a definition: its digest and that of [`zero_contests`].
pub fn zero_report(definition: &Definition) -> ZeroReport {
    let contests = zero_contests(definition);
    let value = serde_json::to_value(&contests).expect("a report always converts to JSON");
    let mut hasher = Sha256::new();
    hasher.update(ZERO_REPORT_DOMAIN);
    hasher.update(serde_json::to_vec(&value).expect("a report always encodes"));
    ZeroReport {
        election: definition.election.id.clone(),
        mode: definition.election.mode,
        definition_digest: crate::canonical::digest(definition).to_string(),
        contests: contests.len() as u64,
        report_digest: hex::encode(hasher.finalize()),
    }
}

/// Every contest of a definition with no unit reported, no ballot and no vote: the report the
/// officials read before they sign.
pub fn zero_contests(definition: &Definition) -> Vec<ZeroContest> {
    definition
        .contests
        .iter()
        .map(|c| ZeroContest {
            contest: c.id.clone(),
            name: c.name.clone(),
            seats: c.seats,
            registered_voters: c.registered_voters,
            units_expected: definition.units_serving_count(&c.id) as u64,
            units_reported: 0,
            ballots_collected: 0,
            candidates: c
                .candidates
                .iter()
                .map(|x| ZeroCandidate {
                    candidate: x.id.clone(),
                    name: x.name.clone(),
                    votes: 0,
                })
                .collect(),
        })
        .collect()
}

/// Whether the record takes a zero report now: it is [`zero_report`] of the definition in
/// force, no sheet is recorded yet (`sheets_recorded`), and none was taken before (`earlier`,
/// its log index).
pub fn check_zero_report(
    definition: &Definition,
    report: &ZeroReport,
    sheets_recorded: bool,
    earlier: Option<u64>,
) -> Result<(), Error> {
    let mut problems = Vec::new();
    let mut problem = |field: &str, message: String| {
        problems.push(DefinitionProblem {
            file: "the zero report".into(),
            location: String::new(),
            field: field.to_owned(),
            message,
        })
    };
    if let Some(index) = earlier {
        problem(
            "",
            format!("a zero report is already recorded (log index {index}); there is one"),
        );
    }
    if sheets_recorded {
        problem(
            "",
            "sheets are already recorded; the zero report comes before the first sheet".into(),
        );
    }
    let expected = zero_report(definition);
    if report.definition_digest != expected.definition_digest {
        problem(
            "definition_digest",
            format!(
                "is {}, but the definition in force has digest {}; prepare the report again from the county's definition and its amendments",
                report.definition_digest, expected.definition_digest
            ),
        );
    } else if *report != expected {
        problem(
            "report_digest",
            format!(
                "is not the digest of the definition's {} contests at zero ({}); prepare it with `tally zero-report prepare`",
                expected.contests, expected.report_digest
            ),
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Definition(problems))
    }
}

/// One change an amendment makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Change {
    /// A unit's device broke or was lost: its key is replaced. Sheets recorded before stand;
    /// from the amendment's log index on the old key is refused (E214).
    ReplaceKey { unit: UnitId, public_key: String },
    /// A polling unit added on the day (a mobile ballot box, most often).
    AddUnit {
        id: UnitId,
        name: String,
        kind: UnitKind,
        township: TownshipId,
        contests: Vec<ContestId>,
        public_key: String,
    },
    /// A contest's registered voters, corrected.
    RegisteredVoters {
        contest: ContestId,
        registered_voters: u64,
    },
    /// A candidate withdrawn before polling: refused once a sheet of the contest is recorded.
    WithdrawCandidate {
        contest: ContestId,
        candidate: CandidateId,
    },
}

/// One official's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfficialSignature {
    pub official: String,
    pub signature: [u8; 64],
}

/// An act as the record carries it: the canonical body and its signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedAct {
    pub body: Vec<u8>,
    pub signatures: Vec<OfficialSignature>,
}

/// The bytes an official signs for an act.
pub fn signing_message(body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(ACT_SIGNATURE_DOMAIN.len() + body.len());
    message.extend_from_slice(ACT_SIGNATURE_DOMAIN);
    message.extend_from_slice(body);
    message
}

/// An official's signature over `body`.
pub fn sign(body: &[u8], official: &str, key: &SigningKey) -> OfficialSignature {
    OfficialSignature {
        official: official.to_owned(),
        signature: key.sign(&signing_message(body)).to_bytes(),
    }
}

impl SignedAct {
    /// The digest the hash chain links for this act: SHA-256 over the domain, the body and
    /// every signature, each length-prefixed (docs/design/record.md).
    pub fn link_digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(ACT_LINK_DOMAIN);
        hasher.update((self.body.len() as u32).to_be_bytes());
        hasher.update(&self.body);
        hasher.update((self.signatures.len() as u32).to_be_bytes());
        for s in &self.signatures {
            hasher.update((s.official.len() as u32).to_be_bytes());
            hasher.update(s.official.as_bytes());
            hasher.update(s.signature);
        }
        hasher.finalize().into()
    }
}

/// Checks an act against the election and its committee: the body is canonical and names
/// this election and mode; every signature is by an official of the committee, once, and
/// valid; at least k are. Returns the body and the officials who signed, or every problem.
pub fn check(definition: &Definition, act: &SignedAct) -> Result<(ActBody, Vec<String>), Error> {
    let what = "the act".to_owned();
    let problem = |field: &str, message: String| DefinitionProblem {
        file: what.clone(),
        location: String::new(),
        field: field.to_owned(),
        message,
    };
    let body = ActBody::decode(&act.body).map_err(|e| Error::Definition(vec![problem("", e)]))?;
    let what = body.label();
    let problem = |field: &str, message: String| DefinitionProblem {
        file: what.clone(),
        location: String::new(),
        field: field.to_owned(),
        message,
    };
    let mut problems = Vec::new();
    let Election { id, mode, .. } = &definition.election;
    let (act_election, act_mode) = body.election();
    if (act_election, act_mode) != (id.as_str(), *mode) {
        problems.push(problem(
            "election",
            format!(
                "is for election {act_election} ({act_mode}), but this is election {id} ({mode}); an act applies to the election it names only"
            ),
        ));
    }
    let (committee, whose) = match committee_for(definition, &body) {
        Ok(found) => found,
        Err(e) => {
            problems.push(problem("signatures", e));
            return Err(Error::Definition(problems));
        }
    };
    if act.signatures.len() > SIGNATURES_MAX {
        problems.push(problem(
            "signatures",
            format!(
                "carries {} signatures; at most {SIGNATURES_MAX}",
                act.signatures.len()
            ),
        ));
    }
    let message = signing_message(&act.body);
    let mut signers: Vec<String> = Vec::new();
    for (i, s) in act.signatures.iter().enumerate() {
        let field = format!("signatures[{i}]");
        let Some(official) = committee.official(&s.official) else {
            let elsewhere = all_committees(definition)
                .into_iter()
                .find(|(c, _)| c.official(&s.official).is_some())
                .map(|(_, name)| name);
            problems.push(problem(
                &field,
                match elsewhere {
                    Some(other) => format!(
                        "{} is by {}, an official of {other}, not of {whose}, whose act this is",
                        Code::AnotherCommittee.as_str(),
                        s.official
                    ),
                    None => format!(
                        "is by {:?}, who is not an official of {whose} (the definition's committees)",
                        s.official
                    ),
                },
            ));
            continue;
        };
        if signers.contains(&official.id) {
            problems.push(problem(
                &field,
                format!(
                    "official {} signed twice; each official signs once",
                    official.id
                ),
            ));
            continue;
        }
        if official
            .public_key
            .verify(&message, &Signature::from_bytes(&s.signature))
            .is_err()
        {
            problems.push(problem(
                &field,
                format!(
                    "official {}'s signature does not verify: the act was changed after it was signed, or signed with another key",
                    official.id
                ),
            ));
            continue;
        }
        signers.push(official.id.clone());
    }
    let k = committee.threshold as usize;
    if signers.len() < k {
        problems.push(problem(
            "signatures",
            format!(
                "{} {} valid signature(s) of the {k} {whose}'s threshold asks for; more of its officials sign it (`tally committee sign`, `tally amend sign`)",
                Code::TooFewSignatures.as_str(),
                signers.len()
            ),
        ));
    }
    if problems.is_empty() {
        Ok((body, signers))
    } else {
        Err(Error::Definition(problems))
    }
}

/// The committee an act belongs to, and its name for messages: the county committee for an
/// amendment and the zero report; for a decision, a confirmation or a reopening, the committee
/// of its contests (a township-level contest's township committee where the definition names
/// one, else the county committee). A confirmation of contests of different committees
/// belongs to none (E404).
pub fn committee_for<'a>(
    definition: &'a Definition,
    body: &ActBody,
) -> Result<(&'a Committee, String), String> {
    let county = || -> Result<(&'a Committee, String), String> {
        definition
            .committee
            .as_ref()
            .map(|c| (c, COUNTY_COMMITTEE.to_owned()))
            .ok_or_else(|| {
                "the definition names no committee ([committee] with its officials), so no act can be signed".to_owned()
            })
    };
    let of_contest = |id: &ContestId| -> Result<(&'a Committee, String), String> {
        let contest = definition
            .contest(id)
            .ok_or_else(|| format!("contest {id} is not in the definition"))?;
        match definition.township_committee(&contest.township) {
            Some(t) if contest.level == crate::congress::Level::Township => {
                Ok((&t.committee, township_committee_name(t)))
            }
            _ => county(),
        }
    };
    match body {
        ActBody::Amendment(_) | ActBody::ZeroReport(_) => county(),
        ActBody::Decision(d) => of_contest(&d.contest),
        ActBody::Reopening(r) => of_contest(&r.contest),
        ActBody::Confirmation(c) => {
            let mut found: Option<(&'a Committee, String)> = None;
            for x in &c.contests {
                let this = of_contest(&x.contest)?;
                match &found {
                    Some((_, whose)) if *whose != this.1 => {
                        return Err(format!(
                            "{} confirmation {} names contests of {whose} and of {}; each committee confirms its own contests in an act of its own",
                            Code::AnotherCommittee.as_str(),
                            c.id,
                            this.1
                        ));
                    }
                    Some(_) => {}
                    None => found = Some(this),
                }
            }
            match found {
                Some(found) => Ok(found),
                None => county(),
            }
        }
    }
}

const COUNTY_COMMITTEE: &str = "the county election committee";

fn township_committee_name(t: &crate::definition::TownshipCommittee) -> String {
    format!("the election committee of township {}", t.township)
}

/// Every committee of the definition with its name: the county's, then the townships'.
fn all_committees(definition: &Definition) -> Vec<(&Committee, String)> {
    definition
        .committee
        .iter()
        .map(|c| (c, COUNTY_COMMITTEE.to_owned()))
        .chain(
            definition
                .township_committees
                .iter()
                .map(|t| (&t.committee, township_committee_name(t))),
        )
        .collect()
}

/// The definition in force after `amendment`, applied at `log_index`: each change checked
/// against the definition in force (the unit, contest or candidate it names exists; a new key
/// is not already a signer's, present or replaced), then the amended definition checked as a
/// file would be. `polled` says whether a contest already has a recorded sheet (a candidate is
/// withdrawn only before polling). Every problem at once; nothing applied unless all pass.
pub fn amend(
    definition: &Definition,
    amendment: &Amendment,
    log_index: u64,
    polled: &dyn Fn(&ContestId) -> bool,
) -> Result<Definition, Error> {
    let file = format!("amendment {}", amendment.id);
    let mut problems = Vec::new();
    let mut problem = |location: String, field: &str, message: String| {
        problems.push(DefinitionProblem {
            file: file.clone(),
            location,
            field: field.to_owned(),
            message,
        })
    };
    if let Err(e) = check_id(&amendment.id) {
        problem(String::new(), "id", format!("id {:?} {e}", amendment.id));
    }
    if let Some(earlier) = definition
        .amended
        .amendments
        .iter()
        .find(|a| a.id == amendment.id)
    {
        problem(
            String::new(),
            "id",
            format!(
                "amendment {} is already in force (log index {}); an amendment applies once: give a new amendment a new id",
                earlier.id, earlier.log_index
            ),
        );
    }
    if amendment.reason.trim().is_empty() {
        problem(
            String::new(),
            "reason",
            "is empty; say why, in the committee's words (reports print it)".into(),
        );
    }
    if amendment.changes.is_empty() {
        problem(String::new(), "changes", "lists no change".into());
    }
    let mut amended = definition.clone();
    let mut notes = Vec::new();
    let mut new_keys: Vec<KeyId> = Vec::new();
    for (i, change) in amendment.changes.iter().enumerate() {
        let at = format!("changes[{i}]");
        let mut new_key = |text: &str, problem: &mut dyn FnMut(String, &str, String)| {
            match parse_public_key(text) {
                Ok(key) => {
                    let key_id = KeyId::of(&key);
                    if definition.key_in_use(&key_id) || new_keys.contains(&key_id) {
                        problem(
                            at.clone(),
                            "public_key",
                            format!(
                                "key {key_id} is already in use by a signer of this election (or was replaced); make a new one with `tally keygen`"
                            ),
                        );
                        None
                    } else {
                        new_keys.push(key_id);
                        Some((key, key_id))
                    }
                }
                Err(e) => {
                    problem(at.clone(), "public_key", e);
                    None
                }
            }
        };
        match change {
            Change::ReplaceKey { unit, public_key } => {
                let key = new_key(public_key, &mut problem);
                let Some(position) = amended.units.iter().position(|u| u.id == *unit) else {
                    problem(
                        at.clone(),
                        "unit",
                        format!("no polling unit {unit} in the definition in force"),
                    );
                    continue;
                };
                if let Some((key, key_id)) = key {
                    let u = &mut amended.units[position];
                    amended.amended.retired_keys.insert(
                        u.key_id,
                        RetiredKey {
                            unit: unit.clone(),
                            amendment: amendment.id.clone(),
                            log_index,
                        },
                    );
                    notes.push(format!(
                        "unit {unit}: key {} replaced by key {key_id}",
                        u.key_id
                    ));
                    u.public_key = key;
                    u.key_id = key_id;
                }
            }
            Change::AddUnit {
                id,
                name,
                kind,
                township,
                contests,
                public_key,
            } => {
                let key = new_key(public_key, &mut problem);
                if amended.units.iter().any(|u| u.id == *id) {
                    problem(
                        at.clone(),
                        "id",
                        format!("polling unit {id} is already in the definition"),
                    );
                }
                if definition.township(township).is_none() {
                    problem(at.clone(), "township", format!("no township {township}"));
                }
                for contest in contests {
                    if definition.contest(contest).is_none() {
                        problem(at.clone(), "contests", format!("no contest {contest}"));
                    }
                }
                if let Some((key, key_id)) = key {
                    notes.push(format!(
                        "unit {id} ({name}, {}) added in township {township}, for {}",
                        kind.chinese(),
                        contests
                            .iter()
                            .map(ContestId::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                    amended.units.push(PollingUnit {
                        id: id.clone(),
                        name: name.clone(),
                        kind: *kind,
                        township: township.clone(),
                        contests: contests.clone(),
                        public_key: key,
                        key_id,
                    });
                }
            }
            Change::RegisteredVoters {
                contest,
                registered_voters,
            } => match amended.contests.iter_mut().find(|c| c.id == *contest) {
                Some(c) => {
                    notes.push(format!(
                        "contest {contest}: registered voters {} corrected to {registered_voters}",
                        c.registered_voters
                    ));
                    c.registered_voters = *registered_voters;
                }
                None => problem(at.clone(), "contest", format!("no contest {contest}")),
            },
            Change::WithdrawCandidate { contest, candidate } => {
                let Some(c) = amended.contests.iter_mut().find(|c| c.id == *contest) else {
                    problem(at.clone(), "contest", format!("no contest {contest}"));
                    continue;
                };
                let Some(position) = c.candidates.iter().position(|x| x.id == *candidate) else {
                    problem(
                        at.clone(),
                        "candidate",
                        format!("contest {contest} has no candidate {candidate}"),
                    );
                    continue;
                };
                if polled(contest) {
                    problem(
                        at.clone(),
                        "candidate",
                        format!(
                            "polling has begun in contest {contest} (a sheet of it is recorded); a candidate is withdrawn before polling only"
                        ),
                    );
                    continue;
                }
                let withdrawn = c.candidates.remove(position);
                notes.push(format!(
                    "contest {contest}: candidate {} ({}) withdrawn",
                    withdrawn.id, withdrawn.name
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Definition(problems));
    }
    // The amended definition, checked as a file: a unit with no contest, a contest no unit
    // serves, fewer candidates than the rules ask for, all come out here.
    let history = std::mem::take(&mut amended.amended);
    let mut reloaded = crate::canonical::reload(
        &format!("the definition as amended by {}", amendment.id),
        &amended,
    )?;
    reloaded.amended = history;
    reloaded.amended.amendments.push(AmendmentNote {
        id: amendment.id.clone(),
        log_index,
        reason: amendment.reason.clone(),
        changes: notes,
    });
    Ok(reloaded)
}

/// The format name of an act file.
pub const ACT_FILE_FORMAT: &str = "tally-act-1";

/// An act as a file passed from official to official (`tally amend`): the act in readable
/// JSON, and the signatures so far, each over the act's canonical encoding. Editing the act
/// after someone signed breaks their signature; signing again replaces one's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActFile {
    pub format: String,
    pub act: ActBody,
    #[serde(default)]
    pub signatures: Vec<FileSignature>,
}

/// One official's signature in an act file: their id and 128 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSignature {
    pub official: String,
    pub signature: String,
}

impl ActFile {
    pub fn new(act: ActBody) -> Self {
        ActFile {
            format: ACT_FILE_FORMAT.to_owned(),
            act,
            signatures: Vec::new(),
        }
    }

    /// Reads an act file's text; `what` names it in messages (its path).
    pub fn parse(what: &str, text: &str) -> Result<ActFile, String> {
        let file: ActFile = serde_json::from_str(text)
            .map_err(|e| format!("{what} is not an act file (as `tally amend` writes): {e}"))?;
        if file.format != ACT_FILE_FORMAT {
            return Err(format!(
                "{what} is in format {:?}; this version reads {ACT_FILE_FORMAT:?}",
                file.format
            ));
        }
        Ok(file)
    }

    /// The text to write: pretty JSON and a final newline.
    pub fn text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("an act file always encodes");
        text.push('\n');
        text
    }

    /// Adds `official`'s signature, replacing one they made before.
    pub fn sign(&mut self, official: &str, key: &SigningKey) {
        let s = sign(&self.act.encode(), official, key);
        self.signatures.retain(|f| f.official != official);
        self.signatures.push(FileSignature {
            official: s.official,
            signature: hex::encode(s.signature),
        });
    }

    /// The act as the record carries it. A signature that is not 128 hex digits is an error
    /// naming it.
    pub fn signed(&self) -> Result<SignedAct, String> {
        let signatures = self
            .signatures
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let bytes = hex::decode(&f.signature).ok();
                let signature = bytes
                    .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
                    .ok_or_else(|| {
                        format!(
                            "signatures[{i}] (official {}) is not 128 hex digits; sign again with `tally amend sign`",
                            f.official
                        )
                    })?;
                Ok(OfficialSignature {
                    official: f.official.clone(),
                    signature,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(SignedAct {
            body: self.act.encode(),
            signatures,
        })
    }
}

/// An act in plain words, one line each, for the official about to sign it and for the
/// reports: `amendment A-003: 设备损坏` and then each change.
pub fn describe(body: &ActBody) -> Vec<String> {
    match body {
        ActBody::Amendment(a) => {
            let mut lines = vec![format!(
                "amendment {} of election {} ({}): {}",
                a.id, a.election, a.mode, a.reason
            )];
            for change in &a.changes {
                lines.push(match change {
                    Change::ReplaceKey { unit, public_key } => {
                        let key = parse_public_key(public_key)
                            .map(|k| KeyId::of(&k).to_string())
                            .unwrap_or_else(|e| format!("(a key that {e})"));
                        format!("  replace the key of unit {unit} by key {key}")
                    }
                    Change::AddUnit {
                        id,
                        name,
                        kind,
                        township,
                        contests,
                        ..
                    } => format!(
                        "  add unit {id} {name} ({}) in township {township}, for {}",
                        kind.chinese(),
                        contests
                            .iter()
                            .map(ContestId::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Change::RegisteredVoters {
                        contest,
                        registered_voters,
                    } => format!(
                        "  set the registered voters of contest {contest} to {registered_voters}"
                    ),
                    Change::WithdrawCandidate { contest, candidate } => {
                        format!("  withdraw candidate {candidate} from contest {contest}")
                    }
                });
            }
            lines
        }
        ActBody::ZeroReport(z) => vec![format!(
            "the zero report of election {} ({}): its {} contests at zero before the first sheet (report digest {}), under definition {}",
            z.election, z.mode, z.contests, z.report_digest, z.definition_digest
        )],
        ActBody::Decision(d) => {
            let what = match &d.decide {
                crate::committee::DecisionKind::KeepSheet {
                    unit,
                    round,
                    version,
                    sheet_digest,
                } => format!(
                    "of the conflicting sheets of unit {unit}, round {round}, version {version}, the one with digest {sheet_digest} counts"
                ),
                crate::committee::DecisionKind::CutoffTie { round, chosen } => format!(
                    "after round {round}, the further election lists, of the tied: {}",
                    chosen
                        .iter()
                        .map(person_text)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                crate::committee::DecisionKind::WriteIns { merge, invalid } => {
                    let mut parts: Vec<String> = merge
                        .iter()
                        .map(|m| {
                            format!("count {} as {}", m.names.join(" / "), person_text(&m.into))
                        })
                        .collect();
                    if !invalid.is_empty() {
                        parts.push(format!("rule {} invalid", invalid.join(" / ")));
                    }
                    format!("written-in names: {}", parts.join("; "))
                }
                crate::committee::DecisionKind::VoidRound { round } => {
                    format!("round {round} is void (选举无效) and held again")
                }
                crate::committee::DecisionKind::OrderRecount { unit, round } => {
                    format!("the ballots of unit {unit}, round {round} are to be recounted")
                }
                crate::committee::DecisionKind::Recount { sheet } => format!(
                    "the recount of unit {}, round {}: {} issued, {} collected, {} void, {} valid; {}",
                    sheet.unit,
                    sheet.round.0,
                    sheet.ballots_issued,
                    sheet.ballots_collected,
                    sheet.ballots_void,
                    sheet.ballots_valid,
                    sheet
                        .candidates
                        .iter()
                        .map(|c| format!("{} {}", c.candidate, c.approvals))
                        .chain(
                            sheet
                                .write_ins
                                .iter()
                                .map(|w| format!("{} {}", w.name, w.votes))
                        )
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                crate::committee::DecisionKind::Review { code, at, note } => {
                    format!("warning {code} at {at} reviewed: {note}")
                }
            };
            vec![
                format!(
                    "decision {} of election {} ({}) on contest {}: {}",
                    d.id, d.election, d.mode, d.contest, d.reason
                ),
                format!("  {what}"),
            ]
        }
        ActBody::Confirmation(c) => {
            let mut lines = vec![format!(
                "confirmation {} of election {} ({}): the results below are determined valid (确认选举结果有效), as of log index {} (chain head {})",
                c.id, c.election, c.mode, c.log_index, c.head
            )];
            lines.extend(
                c.contests
                    .iter()
                    .map(|x| format!("  contest {}: result {}", x.contest, x.result_digest)),
            );
            lines
        }
        ActBody::Reopening(r) => vec![format!(
            "reopening {} of election {} ({}): contest {} reopened, lifting confirmation {}: {}",
            r.id, r.election, r.mode, r.contest, r.confirmation, r.reason
        )],
    }
}

fn person_text(person: &crate::results::Person) -> String {
    match person {
        crate::results::Person::Candidate(id) => format!("candidate {id}"),
        crate::results::Person::WriteIn(name) => format!("the written-in name {name}"),
    }
}

#[cfg(test)]
mod tests;
