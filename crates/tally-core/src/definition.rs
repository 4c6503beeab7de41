//! The election definition: what is being elected, where, by whom, and under which rule
//! options. Hand-written as TOML; contests, candidates, units and township populations may come
//! from CSV files beside it, because election offices keep those in spreadsheets.
//!
//! Loading never stops at the first problem: it collects every error, each naming the file,
//! the line or record, the field, and what is wrong, so a clerk fixes them all in one pass.
//! This module reads no files itself; the caller hands it the text of each file it asks for.

use crate::Error;
use crate::apportion::{Method, TieRule};
use crate::congress::{LawRevision, Level, SeatRounding};
use crate::ids::{CandidateId, ContestId, KeyId, TownshipId, UnitId, check_id};
use crate::toml_text::{line_of, toml_key_at};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// The most seats a constituency may elect (Art 25).
pub const CONSTITUENCY_SEATS_MAX: u32 = 3;
/// Bounds on what a definition may hold, so a malformed file cannot exhaust memory.
pub const TOWNSHIPS_MAX: usize = 10_000;
pub const CONTESTS_MAX: usize = 1_000_000;
pub const UNITS_MAX: usize = 1_000_000;
pub const NAME_LEN_MAX: usize = 200;

/// The rule options the law leaves open. Each is named in the definition file; the defaults
/// are the readings `election-rules.md` gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// Which Election Law revision sets the Art 12 bases.
    pub law_revision: LawRevision,
    /// How "one seat per 5,000 people" is rounded.
    pub seat_rounding: SeatRounding,
    /// Scrutineers a mobile ballot box's sheet must name (the law sets none; provinces ask for 2 or 3).
    pub mobile_box_scrutineers_min: u32,
    /// Whether a further election (另行选举) also needs more than half of the registered voters
    /// to vote. The law is silent; the default applies it.
    pub further_election_turnout_required: bool,
    /// Whether people written in (另选他人) in the round before may be listed on a further
    /// election's ballot, in vote order with the candidates. The law speaks of candidates; the
    /// default (`false`) lists candidates only (written-in people may still be written in again).
    pub further_election_lists_write_ins: bool,
    /// What the one third a further election's winner needs (不得少于选票的三分之一) is of:
    /// `collected`, the ballots cast in that round (the default, the rulebook's reading), or
    /// `issued`, the people who voted (stricter whenever ballots went missing). A one-third
    /// revote (`revote_rule = "one-third"`) uses the same base.
    pub further_election_threshold_base: ThresholdBase,
    /// How a revote (再次投票) between people tied for the last seat(s) is decided. Art 45 says
    /// the one with more votes wins (以得票多的当选); the default `plurality` follows it.
    pub revote_rule: RevoteRule,
    /// Whether a revote also needs more than half of the registered voters to vote. The law
    /// is silent; the default applies it, as for any vote of the constituency.
    pub revote_turnout_required: bool,
    /// Apportionment method for seats among townships and constituencies.
    pub apportionment: Method,
    /// How an apportionment tie is resolved; `report` never breaks one.
    pub apportionment_tie_rule: TieRule,
    /// Whether sheets report disapprovals and abstentions per candidate, not only approvals.
    pub record_disapprovals: bool,
    /// Warn when void ballots exceed this share of ballots collected, in percent.
    pub void_ballots_warn_percent: u32,
    /// Warn when ballots issued and collected differ by more than this share of issued, in percent.
    pub issued_collected_gap_warn_percent: u32,
    /// Warn when a unit's turnout is this many percentage points away from its constituency's.
    pub turnout_outlier_warn_points: u32,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            law_revision: LawRevision::Rev2020,
            seat_rounding: SeatRounding::Floor,
            mobile_box_scrutineers_min: 2,
            further_election_turnout_required: true,
            further_election_lists_write_ins: false,
            further_election_threshold_base: ThresholdBase::Collected,
            revote_rule: RevoteRule::Plurality,
            revote_turnout_required: true,
            apportionment: Method::LargestRemainderHare,
            apportionment_tie_rule: TieRule::Report,
            record_disapprovals: false,
            void_ballots_warn_percent: 5,
            issued_collected_gap_warn_percent: 2,
            turnout_outlier_warn_points: 25,
        }
    }
}

/// What a further election's one-third threshold is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdBase {
    /// The ballots collected in the round (所投的票数, the ballots cast).
    Collected,
    /// The ballots issued in the round (the people who voted).
    Issued,
}

impl ThresholdBase {
    pub fn as_str(self) -> &'static str {
        match self {
            ThresholdBase::Collected => "collected",
            ThresholdBase::Issued => "issued",
        }
    }
}

/// How a revote (再次投票) between people tied for the last seat(s) is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevoteRule {
    /// `plurality`: the most votes win (Art 45, 以得票多的当选); a new tie at the last seat goes
    /// to another revote. Nobody with zero votes is elected.
    Plurality,
    /// `one-third`: as a further election, the most votes win but only with at least one third
    /// of the ballots issued in the revote; a seat nobody wins stays vacant.
    OneThird,
}

/// A polling place (Art 38).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitKind {
    /// 投票站
    Station,
    /// 选举大会
    Assembly,
    /// 流动票箱
    MobileBox,
}

impl UnitKind {
    pub fn chinese(self) -> &'static str {
        match self {
            UnitKind::Station => "投票站",
            UnitKind::Assembly => "选举大会",
            UnitKind::MobileBox => "流动票箱",
        }
    }
}

/// The election's identity: every signature over a sheet or a batch binds the id and the
/// mode (docs/signing.md), so a sheet signed for one election, or in a rehearsal, never counts
/// in another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Election {
    /// 1 to 64 ASCII letters, digits, `-`, `_`, `.`, e.g. `XH-2026`.
    pub id: String,
    pub name: String,
    pub mode: Mode,
}

/// Whether an election is the real one or a rehearsal (演练) of it. A rehearsal runs exactly
/// as the real night does, and says so on every report; its sheets never count in the
/// official election, whose signatures bind the other mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `rehearsal`, the default: an election is official only when its definition says so.
    #[default]
    Rehearsal,
    /// `official`: the election itself.
    Official,
}

impl Mode {
    /// As written in the definition: `rehearsal` or `official`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Rehearsal => "rehearsal",
            Mode::Official => "official",
        }
    }

    /// The banner reports carry: `演练 / REHEARSAL`, `正式 / OFFICIAL`.
    pub fn banner(self) -> &'static str {
        match self {
            Mode::Rehearsal => "演练 / REHEARSAL",
            Mode::Official => "正式 / OFFICIAL",
        }
    }

    /// The banner of a mode as written (`official`, `rehearsal`), or the text itself when it
    /// is neither (an answer from a newer version).
    pub fn banner_of(text: &str) -> &str {
        match text {
            "official" => Mode::Official.banner(),
            "rehearsal" => Mode::Rehearsal.banner(),
            other => other,
        }
    }

    /// The byte the signing messages carry (docs/signing.md): 1 official, 2 rehearsal.
    pub fn wire_byte(self) -> u8 {
        match self {
            Mode::Official => 1,
            Mode::Rehearsal => 2,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An area with a congress: the county, or one township.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Area {
    pub id: TownshipId,
    pub name: String,
    pub population: u64,
    /// The total stated by the definition; required for a small area, else it overrides Art 12
    /// only if it agrees with it (a disagreement is an error).
    pub seats: Option<u64>,
    /// Extra seats granted by the province (up to 5%), as a whole number.
    pub extra_seats: u64,
    /// The key a township's aggregator countersigns each batch of sheets it forwards with
    /// (docs/signing.md, "Countersignature"). Optional so that definitions written before
    /// countersignatures load unchanged; a township without one cannot forward batches to the
    /// county. The county itself never has one.
    #[serde(
        serialize_with = "serialize_optional_key",
        skip_serializing_if = "Option::is_none"
    )]
    pub public_key: Option<VerifyingKey>,
    /// `KeyId::of(public_key)`, present exactly when `public_key` is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<KeyId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub id: CandidateId,
    pub name: String,
}

/// One constituency (选区) at one level: the unit of the count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contest {
    pub id: ContestId,
    pub name: String,
    pub level: Level,
    /// The township the constituency lies in (for a county constituency spanning several
    /// townships, the one that runs its election).
    pub township: TownshipId,
    pub seats: u32,
    pub registered_voters: u64,
    pub candidates: Vec<Candidate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PollingUnit {
    pub id: UnitId,
    pub name: String,
    pub kind: UnitKind,
    pub township: TownshipId,
    pub contests: Vec<ContestId>,
    #[serde(serialize_with = "serialize_key")]
    pub public_key: VerifyingKey,
    pub key_id: KeyId,
}

fn serialize_key<S: serde::Serializer>(key: &VerifyingKey, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(key.as_bytes()))
}

fn serialize_optional_key<S: serde::Serializer>(
    key: &Option<VerifyingKey>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match key {
        Some(key) => serialize_key(key, s),
        None => s.serialize_none(),
    }
}

/// The county election committee (县选举委员会) as the definition names it: the officials who
/// sign its acts (amendments, the zero report; docs/design/record.md) and how many of them
/// must sign one, k of n.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Committee {
    /// k: the signatures an act needs, 1 to the number of officials.
    pub threshold: u32,
    pub officials: Vec<Official>,
}

/// One member of the committee who signs its acts with a key of their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Official {
    pub id: String,
    pub name: String,
    #[serde(serialize_with = "serialize_key")]
    pub public_key: VerifyingKey,
    pub key_id: KeyId,
}

impl Committee {
    pub fn official(&self, id: &str) -> Option<&Official> {
        self.officials.iter().find(|o| o.id == id)
    }
}

/// A township's election committee (乡镇选举委员会): it confirms the township-level results
/// and decides on the township-level contests (docs/design/committee.md), with officials of
/// its own and its own threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TownshipCommittee {
    pub township: TownshipId,
    /// Its threshold and officials, written beside `township` (as the file has them).
    #[serde(flatten)]
    pub committee: Committee,
}

/// What amendments made of the founding definition (crate::act): not part of its canonical
/// encoding (the record holds the amendments themselves), carried so that every check and
/// result under an amended definition can say so.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Amended {
    /// The amendments in force, in the order the record applied them.
    pub amendments: Vec<AmendmentNote>,
    /// Unit keys an amendment replaced: refused from the amendment's log index on (E214).
    pub retired_keys: BTreeMap<KeyId, RetiredKey>,
}

/// One amendment in force, as results list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmendmentNote {
    pub id: String,
    /// The log index of the record that applied it.
    pub log_index: u64,
    pub reason: String,
    /// Each change in plain words, e.g. `unit T01-U004: key replaced (new key id 3f…)`.
    pub changes: Vec<String>,
}

/// A unit key that an amendment replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetiredKey {
    pub unit: UnitId,
    pub amendment: String,
    pub log_index: u64,
}

/// A loaded and validated election definition. Lookups by id are O(1).
#[derive(Debug, Clone, Serialize)]
pub struct Definition {
    pub election: Election,
    pub rules: Rules,
    pub county: Area,
    pub townships: Vec<Area>,
    pub contests: Vec<Contest>,
    pub units: Vec<PollingUnit>,
    /// The committee whose officials sign the election's acts; required for an official
    /// election (its zero report is signed by them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub committee: Option<Committee>,
    /// The townships' own election committees, for their township-level contests; a township
    /// without one is served by the county committee. Written only when there are some, so a
    /// definition without them keeps its digest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub township_committees: Vec<TownshipCommittee>,
    /// What amendments changed; empty for a definition as loaded.
    #[serde(skip)]
    pub amended: Amended,
    #[serde(skip)]
    township_index: HashMap<TownshipId, usize>,
    #[serde(skip)]
    contest_index: HashMap<ContestId, usize>,
    #[serde(skip)]
    unit_index: HashMap<UnitId, usize>,
    #[serde(skip)]
    key_index: HashMap<KeyId, usize>,
    /// Townships by the id of their countersigning key; only townships that have one.
    #[serde(skip)]
    township_key_index: HashMap<KeyId, usize>,
    /// For each contest (by index), the units that serve it, in definition order.
    #[serde(skip)]
    units_by_contest: Vec<Vec<usize>>,
}

impl Definition {
    pub fn township(&self, id: &TownshipId) -> Option<&Area> {
        self.township_index.get(id).map(|&i| &self.townships[i])
    }
    pub fn contest(&self, id: &ContestId) -> Option<&Contest> {
        self.contest_index.get(id).map(|&i| &self.contests[i])
    }
    pub fn contest_position(&self, id: &ContestId) -> Option<usize> {
        self.contest_index.get(id).copied()
    }
    pub fn unit(&self, id: &UnitId) -> Option<&PollingUnit> {
        self.unit_index.get(id).map(|&i| &self.units[i])
    }
    pub fn unit_by_key(&self, key_id: &KeyId) -> Option<&PollingUnit> {
        self.key_index.get(key_id).map(|&i| &self.units[i])
    }
    /// The unit key an amendment replaced, if this is one (refused from then on, E214).
    pub fn retired_key(&self, key_id: &KeyId) -> Option<&RetiredKey> {
        self.amended.retired_keys.get(key_id)
    }
    /// Whether any signer of this election (a unit, a township, an official) uses the key,
    /// or used it before an amendment replaced it.
    pub fn key_in_use(&self, key_id: &KeyId) -> bool {
        self.key_index.contains_key(key_id)
            || self.township_key_index.contains_key(key_id)
            || self.amended.retired_keys.contains_key(key_id)
            || self
                .committee
                .as_ref()
                .is_some_and(|c| c.officials.iter().any(|o| o.key_id == *key_id))
            || self
                .township_committees
                .iter()
                .any(|c| c.committee.officials.iter().any(|o| o.key_id == *key_id))
    }

    /// The township's own committee, if the definition names one.
    pub fn township_committee(&self, township: &TownshipId) -> Option<&TownshipCommittee> {
        self.township_committees
            .iter()
            .find(|c| c.township == *township)
    }
    /// The township whose registered countersigning key has this id. Unit keys and township
    /// keys never coincide (the loader refuses that), so a key id names one signer at most.
    pub fn township_by_key(&self, key_id: &KeyId) -> Option<&Area> {
        self.township_key_index
            .get(key_id)
            .map(|&i| &self.townships[i])
    }
    /// The units that serve a contest, in definition order.
    pub fn units_serving(&self, contest: &ContestId) -> impl Iterator<Item = &PollingUnit> {
        let positions: &[usize] = self
            .contest_index
            .get(contest)
            .map(|&i| self.units_by_contest[i].as_slice())
            .unwrap_or(&[]);
        positions.iter().map(|&u| &self.units[u])
    }
    pub fn units_serving_count(&self, contest: &ContestId) -> usize {
        self.contest_index
            .get(contest)
            .map_or(0, |&i| self.units_by_contest[i].len())
    }
    /// The seat total of the county congress, stated or from Art 12.
    pub fn congress_seats(&self, level: Level, area: &Area) -> Option<u64> {
        area.seats.or_else(|| {
            crate::congress::congress_seats(
                level,
                area.population,
                self.rules.law_revision,
                self.rules.seat_rounding,
                area.extra_seats,
            )
            .map(|s| s.total)
        })
    }
}

/// Where in which file a problem is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefinitionProblem {
    pub file: String,
    /// `line 12` or `record 7 (line 8)`; empty when the problem is with the file as a whole.
    pub location: String,
    /// The field, as the file names it (`contests[3].seats`, `units.csv: public_key`).
    pub field: String,
    pub message: String,
}

impl fmt::Display for DefinitionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if !self.location.is_empty() {
            write!(f, ", {}", self.location)?;
        }
        if !self.field.is_empty() {
            write!(f, ", {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

// ---- The file format, as written. Spanned fields carry their byte position for messages. ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    election: RawElection,
    #[serde(default)]
    rules: Rules,
    county: RawArea,
    #[serde(default)]
    townships: Vec<RawArea>,
    /// CSV with columns id,name,population[,seats,extra_seats,public_key].
    townships_csv: Option<toml::Spanned<String>>,
    #[serde(default)]
    contests: Vec<RawContest>,
    /// CSV with columns id,level,township,name,seats,registered_voters.
    contests_csv: Option<toml::Spanned<String>>,
    /// CSV with columns contest,id,name.
    candidates_csv: Option<toml::Spanned<String>>,
    #[serde(default)]
    units: Vec<RawUnit>,
    /// CSV with columns id,name,kind,township,contests,public_key (contests separated by ';').
    units_csv: Option<toml::Spanned<String>>,
    committee: Option<toml::Spanned<RawCommittee>>,
    #[serde(default)]
    township_committees: Vec<toml::Spanned<RawTownshipCommittee>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTownshipCommittee {
    township: String,
    threshold: u32,
    #[serde(default)]
    officials: Vec<RawOfficial>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommittee {
    threshold: u32,
    #[serde(default)]
    officials: Vec<RawOfficial>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOfficial {
    id: String,
    name: String,
    public_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawElection {
    id: toml::Spanned<String>,
    name: String,
    #[serde(default)]
    mode: Mode,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArea {
    id: toml::Spanned<String>,
    name: String,
    population: u64,
    seats: Option<u64>,
    #[serde(default)]
    extra_seats: u64,
    /// A township's countersigning key; the county may not have one.
    public_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCandidate {
    id: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContest {
    id: toml::Spanned<String>,
    name: String,
    level: Level,
    township: String,
    seats: u32,
    registered_voters: u64,
    #[serde(default)]
    candidates: Vec<RawCandidate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnit {
    id: toml::Spanned<String>,
    name: String,
    kind: UnitKind,
    township: String,
    contests: Vec<String>,
    public_key: String,
}

#[derive(Deserialize)]
struct CsvArea {
    id: String,
    name: String,
    population: u64,
    #[serde(default)]
    seats: Option<u64>,
    #[serde(default)]
    extra_seats: Option<u64>,
    /// Optional column; an empty cell is a township without a key.
    #[serde(default)]
    public_key: Option<String>,
}

#[derive(Deserialize)]
struct CsvContest {
    id: String,
    level: Level,
    township: String,
    name: String,
    seats: u32,
    registered_voters: u64,
}

#[derive(Deserialize)]
struct CsvCandidate {
    contest: String,
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct CsvUnit {
    id: String,
    name: String,
    kind: UnitKind,
    township: String,
    contests: String,
    public_key: String,
}

/// Parses a public key written as 64 hex digits (or 44 characters of standard base64).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let text = text.trim();
    let bytes = match text.len() {
        64 => hex::decode(text).map_err(|e| format!("is not 64 hex digits: {e}"))?,
        44 => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| format!("is not 44 characters of base64: {e}"))?
        }
        n => {
            return Err(format!(
                "is {n} characters; write the 32-byte Ed25519 public key as 64 hex digits (as `tally keygen` prints it)"
            ));
        }
    };
    let bytes: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("is {} bytes, an Ed25519 public key is 32", bytes.len()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "is not a valid Ed25519 public key".to_string())
}

/// Where a record came from, for messages.
#[derive(Clone)]
struct Origin {
    file: String,
    location: String,
    /// Prefix for field names: `contests[2].` in TOML, empty in CSV (the column name suffices).
    field_prefix: String,
}

struct Loader {
    errors: Vec<DefinitionProblem>,
}

impl Loader {
    fn error(&mut self, origin: &Origin, field: &str, message: impl Into<String>) {
        self.errors.push(DefinitionProblem {
            file: origin.file.clone(),
            location: origin.location.clone(),
            field: format!("{}{}", origin.field_prefix, field),
            message: message.into(),
        });
    }

    fn check_id(&mut self, origin: &Origin, field: &str, id: &str) {
        if let Err(e) = check_id(id) {
            self.error(origin, field, format!("id {id:?} {e}"));
        }
    }

    fn check_name(&mut self, origin: &Origin, field: &str, name: &str) {
        if name.trim().is_empty() {
            self.error(
                origin,
                field,
                "is empty; give the name as it appears on the ballot",
            );
        } else if name.len() > NAME_LEN_MAX {
            self.error(
                origin,
                field,
                format!("is {} bytes long, more than {NAME_LEN_MAX}", name.len()),
            );
        }
    }

    /// Reads one CSV file into records of `T`, reporting each bad record with its line, the
    /// column by its header name, and the value as written.
    fn read_csv<T: serde::de::DeserializeOwned>(
        &mut self,
        file: &str,
        text: &str,
        limit: usize,
    ) -> Vec<(Origin, T)> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .comment(Some(b'#'))
            .from_reader(text.trim_start_matches('\u{feff}').as_bytes());
        let mut out = Vec::new();
        let headers = match reader.headers() {
            Ok(h) => h.clone(),
            Err(e) => {
                let (field, message) = describe_csv_error(&e, None, None);
                self.errors.push(DefinitionProblem {
                    file: file.to_owned(),
                    location: "header".into(),
                    field,
                    message,
                });
                return out;
            }
        };
        let mut record = csv::StringRecord::new();
        let mut record_number = 0;
        loop {
            let read = reader.read_record(&mut record);
            if matches!(read, Ok(false)) {
                break;
            }
            record_number += 1;
            let parsed = read.and_then(|_| record.deserialize::<T>(Some(&headers)));
            match parsed {
                Ok(value) => {
                    if out.len() == limit {
                        self.errors.push(DefinitionProblem {
                            file: file.to_owned(),
                            location: format!("record {record_number}"),
                            field: String::new(),
                            message: format!("more than {limit} records; split the election"),
                        });
                        break;
                    }
                    out.push((
                        Origin {
                            file: file.to_owned(),
                            location: format!("record {record_number}"),
                            field_prefix: String::new(),
                        },
                        value,
                    ));
                }
                Err(e) => {
                    let line = e
                        .position()
                        .or_else(|| record.position())
                        .map(csv::Position::line);
                    let location = match line {
                        Some(line) => format!("record {record_number} (line {line})"),
                        None => format!("record {record_number}"),
                    };
                    let (field, message) = describe_csv_error(&e, Some(&headers), Some(&record));
                    self.errors.push(DefinitionProblem {
                        file: file.to_owned(),
                        location,
                        field,
                        message,
                    });
                }
            }
        }
        out
    }
}

/// The column (by its header name) and a message for a CSV error; the value as written is
/// quoted when the error is about one field.
fn describe_csv_error(
    e: &csv::Error,
    headers: Option<&csv::StringRecord>,
    record: Option<&csv::StringRecord>,
) -> (String, String) {
    match e.kind() {
        csv::ErrorKind::Deserialize { err, .. } => {
            let Some(index) = err
                .field()
                .map(|f| f as usize)
                .or_else(|| unknown_variant_column(err.kind(), record))
            else {
                return (String::new(), err.kind().to_string());
            };
            let field = headers
                .and_then(|h| h.get(index))
                .filter(|h| !h.is_empty())
                .map_or_else(|| format!("column {}", index + 1), str::to_owned);
            let Some(value) = record.and_then(|r| r.get(index)) else {
                return (field, err.kind().to_string());
            };
            use csv::DeserializeErrorKind as K;
            let message = match err.kind() {
                K::ParseInt(e) if value.is_empty() => {
                    format!("is empty; give a whole number ({e})")
                }
                K::ParseInt(e) => format!("{value:?} is not a whole number ({e})"),
                K::ParseFloat(e) => format!("{value:?} is not a number ({e})"),
                K::ParseBool(e) => format!("{value:?} is not true or false ({e})"),
                other => format!("{value:?}: {other}"),
            };
            (field, message)
        }
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => (
            String::new(),
            format!("has {len} fields where the header has {expected_len}"),
        ),
        csv::ErrorKind::Utf8 { .. } => (
            String::new(),
            "is not valid UTF-8; save the spreadsheet as CSV UTF-8".to_owned(),
        ),
        _ => (String::new(), e.to_string()),
    }
}

/// The column of an `unknown variant` error, which the CSV reader does not locate: the one
/// column holding that value, if exactly one does.
fn unknown_variant_column(
    kind: &csv::DeserializeErrorKind,
    record: Option<&csv::StringRecord>,
) -> Option<usize> {
    let csv::DeserializeErrorKind::Message(message) = kind else {
        return None;
    };
    let rest = message.strip_prefix("unknown variant `")?;
    let value = &rest[..rest.find('`')?];
    let mut columns = record?
        .iter()
        .enumerate()
        .filter(|(_, v)| *v == value)
        .map(|(i, _)| i);
    let first = columns.next()?;
    columns.next().is_none().then_some(first)
}

/// Loads a definition from the text of its TOML file. `read_sibling` is asked for the text of
/// each CSV file the TOML names (paths as written, relative to the TOML file); it returns an
/// error message if the file cannot be read.
///
/// The steps, each its own function: parse the TOML; resolve each part's rows from TOML and
/// its CSV file; check each part (the county, townships, contests and their candidates, units)
/// against what came before it; then the checks across parts (keys, service, seats). Every
/// problem is collected, so the clerk sees all of them at once.
pub fn load(
    toml_file: &str,
    toml_text: &str,
    read_sibling: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<Definition, Error> {
    let raw = parse_toml(toml_file, toml_text)?;
    let mut source = Source {
        toml_file,
        newlines: toml_text
            .bytes()
            .enumerate()
            .filter_map(|(i, b)| (b == b'\n').then_some(i))
            .collect(),
        read_sibling,
    };
    let mut loader = Loader { errors: Vec::new() };

    let election = check_election(&mut loader, &source, raw.election);
    let (county_origin, county) = check_county(&mut loader, &source, raw.county);
    let township_rows = township_rows(&mut loader, &mut source, raw.townships, &raw.townships_csv);
    let townships = check_townships(&mut loader, township_rows);
    if townships.list.is_empty() {
        loader.errors.push(DefinitionProblem {
            file: toml_file.to_owned(),
            location: String::new(),
            field: "townships".into(),
            message: "no townships; list them as [[townships]] or in townships_csv".into(),
        });
    }

    let contest_rows = contest_rows(&mut loader, &mut source, raw.contests, &raw.contests_csv);
    let mut contests = check_contest_ids(&mut loader, contest_rows);
    let candidate_origins =
        add_csv_candidates(&mut loader, &mut source, &raw.candidates_csv, &mut contests);
    for ((origin, contest), candidate_origins) in contests.list.iter().zip(&candidate_origins) {
        check_contest(
            &mut loader,
            origin,
            contest,
            candidate_origins,
            &townships.index,
        );
    }

    let unit_rows = unit_rows(&mut loader, &mut source, raw.units, &raw.units_csv);
    let units = check_units(&mut loader, unit_rows, &townships.index, &contests);

    check_keys_name_one_signer(&mut loader, &townships, &units);
    let committee = check_committee(
        &mut loader,
        &source,
        raw.committee,
        election.mode,
        &townships,
        &units,
    );
    let township_committees = check_township_committees(
        &mut loader,
        &source,
        raw.township_committees,
        committee.as_ref(),
        &townships,
        &units,
    );
    check_every_contest_served(&mut loader, &contests, &units);
    check_seats_and_rules(
        &mut loader,
        toml_file,
        &raw.rules,
        (&county_origin, &county),
        &townships.list,
    );

    if !loader.errors.is_empty() {
        return Err(Error::Definition(loader.errors));
    }
    Ok(Definition {
        election,
        rules: raw.rules,
        county,
        townships: townships.list.into_iter().map(|(_, a)| a).collect(),
        contests: contests.list.into_iter().map(|(_, c)| c).collect(),
        units: units.list,
        committee,
        township_committees,
        amended: Amended::default(),
        township_index: townships.index,
        contest_index: contests.index,
        unit_index: units.index,
        key_index: units.key_index,
        township_key_index: townships.key_index,
        units_by_contest: units.by_contest,
    })
}

/// Step 1: the TOML file as written. A syntax or type error stops the load here (nothing after
/// it can be read), located by line and the key the bad value was given to.
fn parse_toml(toml_file: &str, toml_text: &str) -> Result<RawDefinition, Error> {
    toml::from_str(toml_text).map_err(|e| {
        let location = e
            .span()
            .map(|s| format!("line {}", line_of(toml_text, s.start)))
            .unwrap_or_default();
        // A type error's span is the value; name the key it was given to.
        let field = e
            .span()
            .and_then(|s| toml_key_at(toml_text, s.start))
            .unwrap_or_default()
            .to_owned();
        Error::Definition(vec![DefinitionProblem {
            file: toml_file.to_owned(),
            location,
            field,
            message: e.message().trim_end_matches('\n').to_owned(),
        }])
    })
}

/// The TOML file and a reader for the CSV files it names: where rows come from.
struct Source<'a> {
    toml_file: &'a str,
    /// The byte offset of every newline in `toml_text`, so a row's line is a binary search
    /// rather than a scan from the start (a definition with thousands of [[units]] tables
    /// would otherwise take quadratic time).
    newlines: Vec<usize>,
    read_sibling: &'a mut dyn FnMut(&str) -> Result<String, String>,
}

impl Source<'_> {
    /// The origin of a TOML table whose key starts at byte `span_start`.
    fn origin(&self, field_prefix: String, span_start: usize) -> Origin {
        Origin {
            file: self.toml_file.to_owned(),
            location: format!(
                "line {}",
                self.newlines.partition_point(|&n| n < span_start) + 1
            ),
            field_prefix,
        }
    }

    /// The records of the CSV file named by `field` (`townships_csv = "…"`), if it is named;
    /// a file that cannot be read is reported at that TOML line and gives no records.
    fn csv<T: serde::de::DeserializeOwned>(
        &mut self,
        loader: &mut Loader,
        field: &str,
        path: &Option<toml::Spanned<String>>,
        limit: usize,
    ) -> Vec<(Origin, T)> {
        let Some(path) = path else {
            return Vec::new();
        };
        match (self.read_sibling)(path.get_ref()) {
            Ok(text) => loader.read_csv(path.get_ref(), &text, limit),
            Err(e) => {
                let origin = self.origin(String::new(), path.span().start);
                loader.error(
                    &origin,
                    field,
                    format!("cannot read {:?}: {e}", path.get_ref()),
                );
                Vec::new()
            }
        }
    }
}

/// Step 2: the county itself.
/// The election's id is signed into every sheet (docs/signing.md), so it is an id like any other.
fn check_election(loader: &mut Loader, source: &Source<'_>, raw: RawElection) -> Election {
    let origin = source.origin("election.".into(), raw.id.span().start);
    loader.check_id(&origin, "id", raw.id.get_ref());
    loader.check_name(&origin, "name", &raw.name);
    Election {
        id: raw.id.into_inner(),
        name: raw.name,
        mode: raw.mode,
    }
}

fn check_county(loader: &mut Loader, source: &Source<'_>, raw: RawArea) -> (Origin, Area) {
    let origin = source.origin("county.".into(), raw.id.span().start);
    loader.check_id(&origin, "id", raw.id.get_ref());
    loader.check_name(&origin, "name", &raw.name);
    // Only townships countersign batches (they forward sheets; the county receives them).
    if raw.public_key.is_some() {
        loader.error(
            &origin,
            "public_key",
            "the county does not countersign batches; remove it (a township's key goes in its [[townships]] entry or townships.csv's public_key column)",
        );
    }
    let county = Area {
        id: TownshipId::new(raw.id.into_inner()),
        name: raw.name,
        population: raw.population,
        seats: raw.seats,
        extra_seats: raw.extra_seats,
        public_key: None,
        key_id: None,
    };
    (origin, county)
}

/// Where one part of the definition is written: its TOML tables, then its CSV file.
struct Part<'a, T> {
    /// `units` for `[[units]]`: a TOML row's fields are named `units[3].id`.
    table: &'static str,
    toml_rows: Vec<T>,
    /// Where a TOML row starts (its id), for its line.
    id_start: fn(&T) -> usize,
    /// `units_csv`: the key that names the CSV file, if any.
    csv_field: &'static str,
    csv_path: &'a Option<toml::Spanned<String>>,
    csv_limit: usize,
}

/// One part's rows as written, each where it was written: the TOML tables in order, then the
/// CSV records, each made into the part's common shape.
fn part_rows<T, C: serde::de::DeserializeOwned, R>(
    loader: &mut Loader,
    source: &mut Source<'_>,
    part: Part<'_, T>,
    from_toml: impl Fn(T) -> R,
    from_csv: impl Fn(C) -> R,
) -> Vec<(Origin, R)> {
    let mut rows = Vec::new();
    for (i, row) in part.toml_rows.into_iter().enumerate() {
        let origin = source.origin(format!("{}[{i}].", part.table), (part.id_start)(&row));
        rows.push((origin, from_toml(row)));
    }
    let records = source.csv::<C>(loader, part.csv_field, part.csv_path, part.csv_limit);
    rows.extend(
        records
            .into_iter()
            .map(|(origin, record)| (origin, from_csv(record))),
    );
    rows
}

/// Step 3: each township as written, from `[[townships]]` then `townships_csv`, with its key
/// still as text: it is parsed once the township is known to be kept, so a township defined
/// twice reports only that.
fn township_rows(
    loader: &mut Loader,
    source: &mut Source<'_>,
    toml_rows: Vec<RawArea>,
    csv_path: &Option<toml::Spanned<String>>,
) -> Vec<(Origin, (Area, Option<String>))> {
    let area = |id: String, name, population, seats, extra_seats| Area {
        id: TownshipId::new(id),
        name,
        population,
        seats,
        extra_seats,
        public_key: None,
        key_id: None,
    };
    let part = Part {
        table: "townships",
        toml_rows,
        id_start: |t| t.id.span().start,
        csv_field: "townships_csv",
        csv_path,
        csv_limit: TOWNSHIPS_MAX,
    };
    part_rows(
        loader,
        source,
        part,
        |t: RawArea| {
            let township = area(
                t.id.into_inner(),
                t.name,
                t.population,
                t.seats,
                t.extra_seats,
            );
            (township, t.public_key)
        },
        |t: CsvArea| {
            let township = area(
                t.id,
                t.name,
                t.population,
                t.seats,
                t.extra_seats.unwrap_or(0),
            );
            (township, t.public_key.filter(|k| !k.trim().is_empty()))
        },
    )
}

/// The townships kept, each where it was written, and their indexes by id and by key.
struct Townships {
    list: Vec<(Origin, Area)>,
    index: HashMap<TownshipId, usize>,
    key_index: HashMap<KeyId, usize>,
}

/// Step 4: each township's id, name and key, and that no id or key is given twice.
fn check_townships(loader: &mut Loader, rows: Vec<(Origin, (Area, Option<String>))>) -> Townships {
    let mut townships = Townships {
        list: Vec::new(),
        index: HashMap::new(),
        key_index: HashMap::new(),
    };
    for (origin, (mut area, public_key)) in rows {
        loader.check_id(&origin, "id", area.id.as_str());
        loader.check_name(&origin, "name", &area.name);
        if townships.index.contains_key(&area.id) {
            loader.error(
                &origin,
                "id",
                format!("township {} is defined twice", area.id),
            );
            continue;
        }
        if let Some(text) = public_key {
            match parse_public_key(&text) {
                Ok(key) => {
                    let key_id = KeyId::of(&key);
                    if let Some(&other) = townships.key_index.get(&key_id) {
                        loader.error(
                            &origin,
                            "public_key",
                            format!(
                                "is also the key of township {}; every township needs its own key (make one with `tally keygen`)",
                                townships.list[other].1.id
                            ),
                        );
                    } else {
                        townships.key_index.insert(key_id, townships.list.len());
                        area.public_key = Some(key);
                        area.key_id = Some(key_id);
                    }
                }
                Err(e) => loader.error(&origin, "public_key", e),
            }
        }
        townships
            .index
            .insert(area.id.clone(), townships.list.len());
        townships.list.push((origin, area));
    }
    townships
}

/// Step 5: each contest as written, from `[[contests]]` (with its candidates) then
/// `contests_csv` (whose candidates come from `candidates_csv`).
fn contest_rows(
    loader: &mut Loader,
    source: &mut Source<'_>,
    toml_rows: Vec<RawContest>,
    csv_path: &Option<toml::Spanned<String>>,
) -> Vec<(Origin, Contest)> {
    let part = Part {
        table: "contests",
        toml_rows,
        id_start: |c| c.id.span().start,
        csv_field: "contests_csv",
        csv_path,
        csv_limit: CONTESTS_MAX,
    };
    part_rows(
        loader,
        source,
        part,
        |c: RawContest| Contest {
            id: ContestId::new(c.id.into_inner()),
            name: c.name,
            level: c.level,
            township: TownshipId::new(c.township),
            seats: c.seats,
            registered_voters: c.registered_voters,
            candidates: c
                .candidates
                .into_iter()
                .map(|c| Candidate {
                    id: CandidateId::new(c.id),
                    name: c.name,
                })
                .collect(),
        },
        |c: CsvContest| Contest {
            id: ContestId::new(c.id),
            name: c.name,
            level: c.level,
            township: TownshipId::new(c.township),
            seats: c.seats,
            registered_voters: c.registered_voters,
            candidates: Vec::new(),
        },
    )
}

/// The contests kept, each where it was written, and their index by id.
struct Contests {
    list: Vec<(Origin, Contest)>,
    index: HashMap<ContestId, usize>,
}

/// Step 6: each contest's id and name, and that no id is given twice.
fn check_contest_ids(loader: &mut Loader, rows: Vec<(Origin, Contest)>) -> Contests {
    let mut contests = Contests {
        list: Vec::new(),
        index: HashMap::new(),
    };
    for (origin, contest) in rows {
        loader.check_id(&origin, "id", contest.id.as_str());
        loader.check_name(&origin, "name", &contest.name);
        if contests.index.contains_key(&contest.id) {
            loader.error(
                &origin,
                "id",
                format!("contest {} is defined twice", contest.id),
            );
            continue;
        }
        contests
            .index
            .insert(contest.id.clone(), contests.list.len());
        contests.list.push((origin, contest));
    }
    contests
}

/// Step 7: the candidates of `candidates_csv`, each added to its contest. Returns where each
/// candidate of each contest was written: `None` for one listed in its TOML contest (the
/// contest's origin names it), the CSV record for one from `candidates_csv`.
fn add_csv_candidates(
    loader: &mut Loader,
    source: &mut Source<'_>,
    csv_path: &Option<toml::Spanned<String>>,
    contests: &mut Contests,
) -> Vec<Vec<Option<Origin>>> {
    let mut candidate_origins: Vec<Vec<Option<Origin>>> = contests
        .list
        .iter()
        .map(|(_, c)| vec![None; c.candidates.len()])
        .collect();
    let rows = source.csv::<CsvCandidate>(loader, "candidates_csv", csv_path, CONTESTS_MAX * 6);
    for (origin, c) in rows {
        match contests.index.get(&ContestId::new(c.contest.clone())) {
            Some(&i) => {
                contests.list[i].1.candidates.push(Candidate {
                    id: CandidateId::new(c.id),
                    name: c.name,
                });
                candidate_origins[i].push(Some(origin));
            }
            None => loader.error(
                &origin,
                "contest",
                format!("contest {:?} is not defined", c.contest),
            ),
        }
    }
    candidate_origins
}

/// Step 8: each polling unit as written, from `[[units]]` then `units_csv` (whose contests
/// column is separated by `;` or spaces).
fn unit_rows(
    loader: &mut Loader,
    source: &mut Source<'_>,
    toml_rows: Vec<RawUnit>,
    csv_path: &Option<toml::Spanned<String>>,
) -> Vec<(Origin, RawUnitFields)> {
    let part = Part {
        table: "units",
        toml_rows,
        id_start: |u| u.id.span().start,
        csv_field: "units_csv",
        csv_path,
        csv_limit: UNITS_MAX,
    };
    part_rows(
        loader,
        source,
        part,
        |u: RawUnit| RawUnitFields {
            id: u.id.into_inner(),
            name: u.name,
            kind: u.kind,
            township: u.township,
            contests: u.contests,
            public_key: u.public_key,
        },
        |u: CsvUnit| RawUnitFields {
            id: u.id,
            name: u.name,
            kind: u.kind,
            township: u.township,
            contests: u
                .contests
                .split([';', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            public_key: u.public_key,
        },
    )
}

/// The units kept, their indexes by id and by key, and the units serving each contest.
struct Units {
    list: Vec<PollingUnit>,
    index: HashMap<UnitId, usize>,
    key_index: HashMap<KeyId, usize>,
    by_contest: Vec<Vec<usize>>,
}

/// Step 9: each unit's id, name, township, contests and key, and that no id or key is given
/// twice.
fn check_units(
    loader: &mut Loader,
    rows: Vec<(Origin, RawUnitFields)>,
    township_index: &HashMap<TownshipId, usize>,
    contests: &Contests,
) -> Units {
    let mut units = Units {
        list: Vec::new(),
        index: HashMap::new(),
        key_index: HashMap::new(),
        by_contest: vec![Vec::new(); contests.list.len()],
    };
    for (origin, u) in rows {
        loader.check_id(&origin, "id", &u.id);
        loader.check_name(&origin, "name", &u.name);
        let id = UnitId::new(u.id);
        if units.index.contains_key(&id) {
            loader.error(&origin, "id", format!("unit {id} is defined twice"));
            continue;
        }
        let township = TownshipId::new(u.township);
        if !township_index.contains_key(&township) {
            loader.error(
                &origin,
                "township",
                format!("township {:?} is not defined", township.as_str()),
            );
        }
        let served = served_contests(loader, &origin, u.contests, contests);
        // Counted as served before the key is checked, so a contest whose only unit has a bad
        // key reports the key, not "no polling unit serves".
        for contest in &served {
            units.by_contest[contests.index[contest]].push(units.list.len());
        }
        let public_key = match parse_public_key(&u.public_key) {
            Ok(k) => k,
            Err(e) => {
                loader.error(&origin, "public_key", e);
                continue;
            }
        };
        let key_id = KeyId::of(&public_key);
        if let Some(&other) = units.key_index.get(&key_id) {
            loader.error(
                &origin,
                "public_key",
                format!(
                    "is also the key of unit {}; every unit needs its own key (tally keygen)",
                    units.list[other].id
                ),
            );
            continue;
        }
        units.key_index.insert(key_id, units.list.len());
        units.index.insert(id.clone(), units.list.len());
        units.list.push(PollingUnit {
            id,
            name: u.name,
            kind: u.kind,
            township,
            contests: served,
            public_key,
            key_id,
        });
    }
    units
}

/// The contests a unit lists that are defined, each once; the others are reported.
fn served_contests(
    loader: &mut Loader,
    origin: &Origin,
    listed: Vec<String>,
    contests: &Contests,
) -> Vec<ContestId> {
    if listed.is_empty() {
        loader.error(
            origin,
            "contests",
            "lists no contests; a unit serves at least one",
        );
    }
    let mut served = Vec::new();
    let mut seen = HashSet::new();
    for c in listed {
        let contest = ContestId::new(c);
        if !seen.insert(contest.clone()) {
            loader.error(origin, "contests", format!("lists {contest} twice"));
        } else if contests.index.contains_key(&contest) {
            served.push(contest);
        } else {
            loader.error(
                origin,
                "contests",
                format!("contest {:?} is not defined", contest.as_str()),
            );
        }
    }
    served
}

/// Cross-check: a key id must name one signer. A township key that is also a unit's would let
/// the township sign sheets as that unit, and the unit countersign batches as the township.
fn check_keys_name_one_signer(loader: &mut Loader, townships: &Townships, units: &Units) {
    for (origin, township) in &townships.list {
        if let Some(key_id) = &township.key_id
            && let Some(&unit) = units.key_index.get(key_id)
        {
            loader.error(
                origin,
                "public_key",
                format!(
                    "is also the key of polling unit {}; a township countersigns with a key of its own, so make one with `tally keygen`",
                    units.list[unit].id
                ),
            );
        }
    }
}

/// The committee: k of n officials, each with a key of their own that no unit or township
/// uses. An official election must name it (its zero report is signed by the officials).
fn check_committee(
    loader: &mut Loader,
    source: &Source<'_>,
    raw: Option<toml::Spanned<RawCommittee>>,
    mode: Mode,
    townships: &Townships,
    units: &Units,
) -> Option<Committee> {
    let Some(raw) = raw else {
        if mode == Mode::Official {
            loader.errors.push(DefinitionProblem {
                file: source.toml_file.to_owned(),
                location: String::new(),
                field: "committee".into(),
                message: "an official election names its committee: add [committee] with a threshold and the [[committee.officials]] who sign its acts (the zero report first)".into(),
            });
        }
        return None;
    };
    let origin = source.origin("committee.".into(), raw.span().start);
    let raw = raw.into_inner();
    let officials = check_officials(loader, &origin, raw.officials, &[], townships, units);
    check_threshold(loader, &origin, "committee", raw.threshold, officials.len());
    Some(Committee {
        threshold: raw.threshold,
        officials,
    })
}

/// The townships' committees: each of a township of the definition, once; officials as the
/// county committee's (a key and an id of their own, among every committee's).
fn check_township_committees(
    loader: &mut Loader,
    source: &Source<'_>,
    raw: Vec<toml::Spanned<RawTownshipCommittee>>,
    county: Option<&Committee>,
    townships: &Townships,
    units: &Units,
) -> Vec<TownshipCommittee> {
    let mut out: Vec<TownshipCommittee> = Vec::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let origin = source.origin(format!("township_committees[{i}]."), raw.span().start);
        let raw = raw.into_inner();
        let township = TownshipId::new(raw.township.clone());
        if !townships.index.contains_key(&township) {
            loader.error(
                &origin,
                "township",
                format!("township {township} is not in the definition"),
            );
        } else if out.iter().any(|c| c.township == township) {
            loader.error(
                &origin,
                "township",
                format!("township {township} has a committee already; name one per township"),
            );
        }
        let others: Vec<&Official> = county
            .into_iter()
            .flat_map(|c| c.officials.iter())
            .chain(out.iter().flat_map(|c| c.committee.officials.iter()))
            .collect();
        let officials = check_officials(loader, &origin, raw.officials, &others, townships, units);
        check_threshold(
            loader,
            &origin,
            &format!("township_committees[{i}]"),
            raw.threshold,
            officials.len(),
        );
        out.push(TownshipCommittee {
            township,
            committee: Committee {
                threshold: raw.threshold,
                officials,
            },
        });
    }
    out
}

fn check_threshold(loader: &mut Loader, origin: &Origin, table: &str, threshold: u32, n: usize) {
    let n = n as u32;
    if n == 0 {
        loader.error(
            origin,
            "officials",
            format!(
                "names no official; list each in {table}.officials with id, name and public_key"
            ),
        );
    } else if threshold == 0 || threshold > n {
        loader.error(
            origin,
            "threshold",
            format!(
                "is {threshold}; with {n} officials it must be 1 to {n} (how many must sign an act)"
            ),
        );
    }
}

/// A committee's officials: ids and keys of their own, not used by `others` (the officials of
/// the committees read before), by a polling unit or by a township.
fn check_officials(
    loader: &mut Loader,
    origin: &Origin,
    raw: Vec<RawOfficial>,
    others: &[&Official],
    townships: &Townships,
    units: &Units,
) -> Vec<Official> {
    let mut officials: Vec<Official> = Vec::new();
    for (i, o) in raw.into_iter().enumerate() {
        let field = |name: &str| format!("officials[{i}].{name}");
        loader.check_id(origin, &field("id"), &o.id);
        loader.check_name(origin, &field("name"), &o.name);
        if officials.iter().any(|p| p.id == o.id) || others.iter().any(|p| p.id == o.id) {
            loader.error(
                origin,
                &field("id"),
                format!(
                    "official {} is named twice; every official, of every committee, has an id of their own",
                    o.id
                ),
            );
        }
        let public_key = match parse_public_key(&o.public_key) {
            Ok(key) => key,
            Err(e) => {
                loader.error(origin, &field("public_key"), e);
                continue;
            }
        };
        let key_id = KeyId::of(&public_key);
        let other = if let Some(p) = officials
            .iter()
            .chain(others.iter().copied())
            .find(|p| p.key_id == key_id)
        {
            Some(format!("official {}", p.id))
        } else if let Some(&u) = units.key_index.get(&key_id) {
            Some(format!("polling unit {}", units.list[u].id))
        } else {
            townships
                .key_index
                .get(&key_id)
                .map(|&t| format!("township {}", townships.list[t].1.id))
        };
        if let Some(other) = other {
            loader.error(
                origin,
                &field("public_key"),
                format!("is also the key of {other}; every official signs with a key of their own (`tally keygen`)"),
            );
        }
        officials.push(Official {
            id: o.id,
            name: o.name,
            public_key,
            key_id,
        });
    }
    officials
}

/// Cross-check: every contest is served by at least one polling unit.
fn check_every_contest_served(loader: &mut Loader, contests: &Contests, units: &Units) {
    for ((origin, contest), serving) in contests.list.iter().zip(&units.by_contest) {
        if serving.is_empty() {
            loader.error(
                origin,
                "id",
                format!("no polling unit serves contest {}", contest.id),
            );
        }
    }
}

/// Cross-check: the rule options, each area's seat total, and the townships' population
/// against the county's.
fn check_seats_and_rules(
    loader: &mut Loader,
    toml_file: &str,
    rules: &Rules,
    (county_origin, county): (&Origin, &Area),
    townships: &[(Origin, Area)],
) {
    let rules_origin = Origin {
        file: toml_file.to_owned(),
        location: String::new(),
        field_prefix: "rules.".into(),
    };
    if rules.mobile_box_scrutineers_min > 10 {
        loader.error(
            &rules_origin,
            "mobile_box_scrutineers_min",
            "is more than 10; provinces ask for 2 or 3",
        );
    }
    check_area_seats(loader, county_origin, Level::County, county, rules);
    for (origin, area) in townships {
        check_area_seats(loader, origin, Level::Township, area, rules);
    }
    // Subdistricts (街道) elect county deputies but have no township congress, so townships
    // may hold fewer people than the county; never more.
    let townships_population: u64 = townships.iter().map(|(_, t)| t.population).sum();
    if townships_population > county.population {
        loader.error(
            county_origin,
            "population",
            format!(
                "is {}, fewer than the {} people of its townships together; correct the county's or the townships' populations",
                county.population, townships_population
            ),
        );
    }
}

struct RawUnitFields {
    id: String,
    name: String,
    kind: UnitKind,
    township: String,
    contests: Vec<String>,
    public_key: String,
}

/// Checks one contest. Contest-level problems (township, seats, the Art 31 count) are reported
/// at the contest's `origin`; a candidate's own problems at the candidate's CSV record when it
/// came from candidates_csv (`candidate_origins[i]`), else at the contest as `candidates[i]`.
fn check_contest(
    loader: &mut Loader,
    origin: &Origin,
    contest: &Contest,
    candidate_origins: &[Option<Origin>],
    township_index: &HashMap<TownshipId, usize>,
) {
    if !township_index.contains_key(&contest.township) {
        loader.error(
            origin,
            "township",
            format!("township {:?} is not defined", contest.township.as_str()),
        );
    }
    if contest.seats == 0 || contest.seats > CONSTITUENCY_SEATS_MAX {
        loader.error(
            origin,
            "seats",
            format!(
                "is {}; a constituency elects 1 to {CONSTITUENCY_SEATS_MAX} deputies (Art 25)",
                contest.seats
            ),
        );
    }
    if contest.registered_voters == 0 {
        loader.error(origin, "registered_voters", "is 0");
    }
    let seats = u64::from(contest.seats);
    let candidates = contest.candidates.len() as u64;
    let low = (4 * seats).div_ceil(3);
    let high = 2 * seats;
    if contest.seats > 0 && !(low..=high).contains(&candidates) {
        loader.error(
            origin,
            "candidates",
            format!(
                "contest {} has {candidates} candidates for {seats} seat{}; Art 31 asks for {} (one third to one times more candidates than seats)",
                contest.id,
                if seats == 1 { "" } else { "s" },
                if low == high { format!("exactly {low}") } else { format!("{low} to {high}") },
            ),
        );
    }
    let mut ids = HashSet::new();
    let mut names = HashSet::new();
    for (i, c) in contest.candidates.iter().enumerate() {
        let (origin, id_field, name_field) = match candidate_origins.get(i).and_then(Option::as_ref)
        {
            Some(own) => (own, "id".to_owned(), "name".to_owned()),
            None => (
                origin,
                format!("candidates[{i}]"),
                format!("candidates[{i}]"),
            ),
        };
        loader.check_id(origin, &id_field, c.id.as_str());
        loader.check_name(origin, &name_field, &c.name);
        if !ids.insert(&c.id) {
            loader.error(
                origin,
                &id_field,
                format!(
                    "candidate id {} appears twice in contest {}",
                    c.id, contest.id
                ),
            );
        }
        if !names.insert(c.name.trim()) {
            loader.error(
                origin,
                &name_field,
                format!(
                    "two candidates of contest {} are named {:?}; add a distinguishing mark to the name as on the ballot",
                    contest.id, c.name
                ),
            );
        }
    }
}

fn check_area_seats(
    loader: &mut Loader,
    origin: &Origin,
    level: Level,
    area: &Area,
    rules: &Rules,
) {
    let computed = crate::congress::congress_seats(
        level,
        area.population,
        rules.law_revision,
        rules.seat_rounding,
        area.extra_seats,
    );
    if area.population == 0 {
        loader.error(origin, "population", "is 0");
    }
    // Art 12 allows up to 5% extra; the definition states the whole number.
    if let Some(c) = computed {
        let before_extra = c.total - c.extra;
        if area.extra_seats * 20 > before_extra {
            loader.error(
                origin,
                "extra_seats",
                format!(
                    "is {}, more than 5% of {before_extra} (Art 12 allows up to 5%)",
                    area.extra_seats
                ),
            );
        }
    }
    match (computed, area.seats) {
        (None, None) => loader.error(
            origin,
            "seats",
            format!(
                "{} has {} people, too few for the Art 12 formula; state the {} congress total as seats = N",
                area.id,
                area.population,
                level.name()
            ),
        ),
        (Some(c), Some(stated)) if c.total != stated => loader.error(
            origin,
            "seats",
            format!(
                "is {stated}, but Art 12 gives {} for {} people ({} + {}{}{}); remove seats or correct the population",
                c.total,
                area.population,
                c.base,
                c.added_for_population,
                if c.capped { ", capped" } else { "" },
                if c.extra > 0 { format!(" + {} extra", c.extra) } else { String::new() },
            ),
        ),
        _ => {}
    }
}

/// Summary counts for messages and reports.
pub fn contest_counts(definition: &Definition) -> BTreeMap<Level, (usize, u64)> {
    let mut out = BTreeMap::new();
    for c in &definition.contests {
        let e = out.entry(c.level).or_insert((0usize, 0u64));
        e.0 += 1;
        e.1 += u64::from(c.seats);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_hex(n: u8) -> String {
        hex::encode(
            ed25519_dalek::SigningKey::from_bytes(&[n; 32])
                .verifying_key()
                .as_bytes(),
        )
    }

    fn minimal() -> String {
        format!(
            r#"
[election]
id = "e1"
name = "测试县选举"

[county]
id = "C"
name = "测试县"
population = 60000

[[townships]]
id = "T01"
name = "城关镇"
population = 38700

[[contests]]
id = "T01-C01"
name = "城关镇第1选区(县)"
level = "county"
township = "T01"
seats = 2
registered_voters = 1000
candidates = [{{ id = "a", name = "张三" }}, {{ id = "b", name = "李四" }}, {{ id = "c", name = "王五" }}]

[[units]]
id = "T01-U001"
name = "东村投票站"
kind = "station"
township = "T01"
contests = ["T01-C01"]
public_key = "{}"
"#,
            key_hex(1)
        )
    }

    fn load_str(text: &str) -> Result<Definition, Error> {
        load("election.toml", text, &mut |p| Err(format!("no file {p}")))
    }

    fn messages(text: &str) -> Vec<String> {
        load_str(text)
            .expect_err("the definition should be rejected")
            .definition_problems()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    // Goal: a well-formed definition loads, with its defaults and lookups.
    #[test]
    fn minimal_definition_loads() {
        let d = load_str(&minimal()).unwrap();
        assert_eq!(d.rules, Rules::default());
        assert_eq!(d.contest(&"T01-C01".into()).unwrap().seats, 2);
        let unit = d.unit(&"T01-U001".into()).unwrap();
        assert_eq!(d.unit_by_key(&unit.key_id).unwrap().id, unit.id);
        assert_eq!(d.units_serving_count(&"T01-C01".into()), 1);
        assert_eq!(d.congress_seats(Level::Township, &d.townships[0]), Some(70));
    }

    // Goal: a TOML mistake names the file and line. Method: misspell a field.
    #[test]
    fn syntax_and_unknown_fields_name_the_line() {
        let m = messages(&minimal().replace("registered_voters", "registerd_voters"));
        assert_eq!(m.len(), 1);
        assert!(m[0].starts_with("election.toml, line "), "{m:?}");
        assert!(m[0].contains("registerd_voters"), "{m:?}");
    }

    // Goal: every semantic problem is reported at once, each with file, line, field and what
    // to do. Method: break seats (Art 25), the candidate ratio (Art 31), a unit's contest and
    // its key in one file.
    #[test]
    fn all_problems_reported_together() {
        let text = minimal()
            .replace("seats = 2", "seats = 4")
            .replace(
                r#"contests = ["T01-C01"]"#,
                r#"contests = ["T01-C01", "T01-C09"]"#,
            )
            .replace(&key_hex(1), "abcd");
        let m = messages(&text);
        assert!(
            m.iter()
                .any(|e| e.contains("contests[0].seats") && e.contains("1 to 3 deputies (Art 25)")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|e| e.contains("contests[0].candidates") && e.contains("Art 31")),
            "{m:?}"
        );
        assert!(
            m.iter().any(
                |e| e.contains("units[0].contests") && e.contains("\"T01-C09\" is not defined")
            ),
            "{m:?}"
        );
        assert!(
        m.iter().any(|e| e.contains("units[0].public_key: is 4 characters; write the 32-byte Ed25519 public key as 64 hex digits")),
        "{m:?}"
    );
        assert!(
            m.iter().all(|e| e.starts_with("election.toml, line ")),
            "{m:?}"
        );
    }

    // Goal: the Art 31 ratio is exactly ceil(4S/3)..=2S. Method: one seat with 3 candidates.
    #[test]
    fn candidate_ratio() {
        let text = minimal().replace("seats = 2", "seats = 1");
        let m = messages(&text);
        assert!(
            m[0].contains("3 candidates for 1 seat; Art 31 asks for exactly 2"),
            "{m:?}"
        );
    }

    // Goal: duplicated ids and keys are refused; one key may not serve two units.
    #[test]
    fn duplicates_refused() {
        let unit = minimal().split("[[units]]").nth(1).unwrap().to_owned();
        let text = format!("{}[[units]]{}", minimal(), unit);
        let m = messages(&text);
        assert!(
            m.iter()
                .any(|e| e.contains("unit T01-U001 is defined twice")),
            "{m:?}"
        );
        let other = unit.replace("T01-U001", "T01-U002");
        let m = messages(&format!("{}[[units]]{}", minimal(), other));
        assert!(
            m.iter()
                .any(|e| e.contains("is also the key of unit T01-U001")),
            "{m:?}"
        );
    }

    // Goal: CSV imports report the file and record; a missing CSV file is named.
    // Method: a units CSV with a bad kind, and a contests_csv that cannot be read.
    #[test]
    fn csv_errors_name_file_and_record() {
        let text = format!(
            "units_csv = \"units.csv\"\ncontests_csv = \"gone.csv\"\n{}",
            minimal()
        );
        let units_csv = format!(
            "id,name,kind,township,contests,public_key\nT01-U002,西村投票站,station,T01,T01-C01,{}\nT01-U003,北村,boat,T01,T01-C01,{}\n",
            key_hex(2),
            key_hex(3)
        );
        let err = load("election.toml", &text, &mut |p| match p {
            "units.csv" => Ok(units_csv.clone()),
            other => Err(format!("no file {other}")),
        })
        .unwrap_err();
        let m: Vec<String> = err
            .definition_problems()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert!(
            m.iter()
                .any(|e| e
                    .starts_with("election.toml, line 2, contests_csv: cannot read \"gone.csv\"")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|e| e.starts_with("units.csv, record 2 (line 3)") && e.contains("boat")),
            "{m:?}"
        );
    }

    // Goal: a stated congress total must agree with Art 12, and a small area must state one.
    #[test]
    fn congress_totals_checked() {
        let m =
            messages(&minimal().replace("population = 38700", "population = 38700\nseats = 71"));
        assert!(m[0].contains("Art 12 gives 70 for 38700 people"), "{m:?}");
        let m = messages(&minimal().replace("population = 38700", "population = 1500"));
        assert!(
            m[0].contains("state the township congress total as seats = N"),
            "{m:?}"
        );
        let small = minimal().replace("population = 38700", "population = 1500\nseats = 30");
        assert!(load_str(&small).is_ok());
    }

    // Goal: the new rule options have the documented names, values and defaults.
    // Method: a definition naming each option with its non-default value.
    #[test]
    fn revote_and_further_election_options() {
        let d = load_str(&minimal().replace(
            "[county]",
            "[rules]\nrevote_rule = \"one-third\"\nrevote_turnout_required = false\nfurther_election_lists_write_ins = true\n\n[county]",
        ))
        .unwrap();
        assert_eq!(d.rules.revote_rule, RevoteRule::OneThird);
        assert!(!d.rules.revote_turnout_required);
        assert!(d.rules.further_election_lists_write_ins);
        let defaults = Rules::default();
        assert_eq!(defaults.revote_rule, RevoteRule::Plurality);
        assert!(defaults.revote_turnout_required);
        assert!(!defaults.further_election_lists_write_ins);
        let m = messages(
            &minimal().replace("[county]", "[rules]\nrevote_rule = \"third\"\n\n[county]"),
        );
        assert!(
            m[0].contains("revote_rule") && m[0].contains("expected `plurality` or `one-third`"),
            "{m:?}"
        );
    }

    /// The minimal definition with its contest in contests.csv and candidates in c.csv.
    fn load_with_csv(contests_csv: &str, candidates_csv: &str) -> Vec<String> {
        let contest = minimal()
            .split("[[contests]]")
            .nth(1)
            .unwrap()
            .split("[[units]]")
            .next()
            .unwrap()
            .to_owned();
        let text = format!(
            "contests_csv = \"contests.csv\"\ncandidates_csv = \"c.csv\"\n{}",
            minimal().replace(&format!("[[contests]]{contest}"), "")
        );
        let (contests_csv, candidates_csv) = (contests_csv.to_owned(), candidates_csv.to_owned());
        let err = load("election.toml", &text, &mut |p| match p {
            "contests.csv" => Ok(contests_csv.clone()),
            "c.csv" => Ok(candidates_csv.clone()),
            other => Err(format!("no file {other}")),
        })
        .expect_err("the definition should be rejected");
        err.definition_problems()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    const CONTESTS_HEADER: &str = "id,level,township,name,seats,registered_voters\n";

    // Goal: a candidate's own problems are reported at its record in candidates.csv, not at
    // the contest; the Art 31 count stays with the contest.
    // Method: contests.csv with one 2-seat contest; c.csv with an empty name, a duplicate id,
    // a duplicate name (3 records, 2 with distinct ids: so 3 candidates pass the count), then
    // with only 1 candidate.
    #[test]
    fn candidate_csv_errors_name_the_candidate_record() {
        let contests = format!("{CONTESTS_HEADER}T01-C01,county,T01,第1选区,2,1000\n");
        let m = load_with_csv(
            &contests,
            "contest,id,name\n# a comment\nT01-C01,a,张三\nT01-C01,b,\nT01-C01,a,李四\nT01-C01,c,张三\n",
        );
        assert_eq!(
            m,
            [
                "c.csv, record 2, name: is empty; give the name as it appears on the ballot",
                "c.csv, record 3, id: candidate id a appears twice in contest T01-C01",
                "c.csv, record 4, name: two candidates of contest T01-C01 are named \"张三\"; add a distinguishing mark to the name as on the ballot",
            ],
        );
        let m = load_with_csv(&contests, "contest,id,name\nT01-C01,a,张三\n");
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].starts_with(
                "contests.csv, record 1, candidates: contest T01-C01 has 1 candidates"
            ),
            "{m:?}"
        );
    }

    // Goal: a CSV value of the wrong type names its column by header and quotes the value; a
    // TOML one names its key.
    // Method: seats "2x" and registered voters empty in contests.csv; a kind that is not one
    // in units.csv; seats = "two" in TOML.
    #[test]
    fn type_errors_name_the_column_and_value() {
        let m = load_with_csv(
            &format!(
                "{CONTESTS_HEADER}T01-C01,county,T01,第1选区,2x,1000\nT01-C02,county,T01,第2选区,1,\n"
            ),
            "contest,id,name\n",
        );
        assert!(
            m.contains(&"contests.csv, record 1 (line 2), seats: \"2x\" is not a whole number (invalid digit found in string)".to_owned()),
            "{m:?}"
        );
        assert!(
            m.contains(&"contests.csv, record 2 (line 3), registered_voters: is empty; give a whole number (cannot parse integer from empty string)".to_owned()),
            "{m:?}"
        );
        let text = format!("units_csv = \"units.csv\"\n{}", minimal());
        let err = load("election.toml", &text, &mut |_| {
            Ok(format!(
                "id,name,kind,township,contests,public_key\nT01-U003,北村,boat,T01,T01-C01,{}\n",
                key_hex(3)
            ))
        })
        .unwrap_err();
        assert_eq!(
            err.definition_problems()[0].to_string(),
            "units.csv, record 1 (line 2), kind: \"boat\": unknown variant `boat`, expected one of `station`, `assembly`, `mobile-box`"
        );
        let text = minimal().replace("seats = 2", "seats = \"two\"");
        let line = text.lines().position(|l| l.starts_with("seats")).unwrap() + 1;
        assert_eq!(
            messages(&text),
            [format!(
                "election.toml, line {line}, seats: invalid type: string \"two\", expected u32"
            )]
        );
    }

    // Goal: a county cannot hold fewer people than its townships together.
    #[test]
    fn townships_cannot_outnumber_the_county() {
        let m =
            messages(&minimal().replace("population = 60000", "population = 30000\nseats = 100"));
        assert!(
            m.iter().any(|e| e.contains(
                "county.population: is 30000, fewer than the 38700 people of its townships"
            )),
            "{m:?}"
        );
    }

    /// The minimal definition with its township in townships.csv instead of TOML.
    fn load_with_townships_csv(townships_csv: &str) -> Result<Definition, Error> {
        let text = format!(
            "townships_csv = \"townships.csv\"\n{}",
            minimal().replace(
                "[[townships]]\nid = \"T01\"\nname = \"城关镇\"\npopulation = 38700\n",
                ""
            )
        );
        let townships_csv = townships_csv.to_owned();
        load("election.toml", &text, &mut |p| match p {
            "townships.csv" => Ok(townships_csv.clone()),
            other => Err(format!("no file {other}")),
        })
    }

    // Goal: a township's countersigning key loads from TOML and from townships.csv, is found
    // by its key id, and definitions without one still load.
    // Method: the minimal definition as is (no key); with public_key in [[townships]]; with
    // townships.csv with and without the column, and with an empty cell.
    #[test]
    fn township_keys_load_and_are_optional() {
        let d = load_str(&minimal()).unwrap();
        assert_eq!(d.townships[0].public_key, None);
        assert_eq!(d.townships[0].key_id, None);

        let text = minimal().replace(
            "population = 38700",
            &format!("population = 38700\npublic_key = \"{}\"", key_hex(7)),
        );
        let d = load_str(&text).unwrap();
        let township = &d.townships[0];
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        assert_eq!(township.public_key, Some(key));
        assert_eq!(township.key_id, Some(KeyId::of(&key)));
        assert_eq!(
            d.township_by_key(&KeyId::of(&key)).unwrap().id.as_str(),
            "T01"
        );
        assert!(d.unit_by_key(&KeyId::of(&key)).is_none());
        let unit_key_id = d.units[0].key_id;
        assert!(d.township_by_key(&unit_key_id).is_none());

        let d = load_with_townships_csv(&format!(
            "id,name,population,public_key\nT01,城关镇,38700,{}\n",
            key_hex(7)
        ))
        .unwrap();
        assert_eq!(d.townships[0].key_id, Some(KeyId::of(&key)));
        let d = load_with_townships_csv("id,name,population\nT01,城关镇,38700\n").unwrap();
        assert_eq!(d.townships[0].public_key, None);
        let d =
            load_with_townships_csv("id,name,population,public_key\nT01,城关镇,38700,\n").unwrap();
        assert_eq!(d.townships[0].public_key, None);
    }

    // Goal: a bad township key is refused with file, record, field and what to do; a township
    // key may serve no other township and no unit; the county has no key.
    // Method: a short key in townships.csv; two townships sharing a key; a township with unit
    // T01-U001's key; a public_key under [county].
    #[test]
    fn township_key_errors() {
        let err = load_with_townships_csv("id,name,population,public_key\nT01,城关镇,38700,abcd\n")
            .unwrap_err();
        assert_eq!(
            err.definition_problems()
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>(),
            [
                "townships.csv, record 1, public_key: is 4 characters; write the 32-byte Ed25519 public key as 64 hex digits (as `tally keygen` prints it)"
            ]
        );

        let err = load_with_townships_csv(&format!(
            "id,name,population,public_key\nT01,城关镇,20000,{k}\nT02,柳溪乡,18700,{k}\n",
            k = key_hex(7)
        ))
        .unwrap_err();
        let m: Vec<String> = err
            .definition_problems()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            m,
            [
                "townships.csv, record 2, public_key: is also the key of township T01; every township needs its own key (make one with `tally keygen`)"
            ],
        );

        let m = messages(&minimal().replace(
            "population = 38700",
            &format!("population = 38700\npublic_key = \"{}\"", key_hex(1)),
        ));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].starts_with("election.toml, line ")
                && m[0].ends_with(", townships[0].public_key: is also the key of polling unit T01-U001; a township countersigns with a key of its own, so make one with `tally keygen`"),
            "{m:?}"
        );

        let m = messages(&minimal().replace(
            "population = 60000",
            &format!("population = 60000\npublic_key = \"{}\"", key_hex(7)),
        ));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].contains("county.public_key: the county does not countersign batches"),
            "{m:?}"
        );
    }

    // Goal: Chinese names and a UTF-8 BOM from a spreadsheet export load as written.
    #[test]
    fn csv_with_bom_and_chinese_names() {
        let text = format!("candidates_csv = \"c.csv\"\n{}", minimal().replace(
            r#"candidates = [{ id = "a", name = "张三" }, { id = "b", name = "李四" }, { id = "c", name = "王五" }]"#,
            "",
        ));
        let d = load("election.toml", &text, &mut |_| {
            Ok(
                "\u{feff}contest,id,name\nT01-C01,a,欧阳建国\nT01-C01,b,司马春梅\nT01-C01,c,李四\n"
                    .into(),
            )
        })
        .unwrap();
        assert_eq!(d.contests[0].candidates[0].name, "欧阳建国");
    }
}
