//! Synthetic counties, for the sample data, tests and benchmarks.
//!
//! It owns nothing of the rules: it writes the files an election office would keep and signs
//! sheets as polling units would, through `tally-core` and `tally-proto`.
//!
//! Everything is derived from a seed by a small deterministic generator (SplitMix64), so the
//! same arguments always give byte-identical files: `examples/sample-county` is this
//! generator's output and a test checks that it still is. Unit and township keys are derived
//! from the seed too, which is fine for synthetic data and wrong for a real election (use
//! `tally keygen`).

use anyhow::{Context, Result, bail};
use ed25519_dalek::SigningKey;
use std::fmt::Write as _;
use tally_core::apportion::{self, Bounds, Method, TieRule};
use tally_core::congress::{LawRevision, Level, SeatRounding, congress_seats};
use tally_core::ids::{CandidateId, ContestId, TownshipId, UnitId};
use tally_core::sheet::{CandidateCount, CountClosedAt, Round, TallySheet, WriteIn, unix_seconds};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenParams {
    pub seed: u64,
    pub county_name: String,
    pub townships: usize,
    /// Total population of the county; townships share it unevenly.
    pub population: u64,
    /// Registered voters per polling station, roughly: smaller gives more units.
    pub voters_per_station: u64,
    /// Plant the cases the rulebook asks the sample to show: a void vote, a tie, a further
    /// election, a vacancy, a failed turnout, a correction.
    pub scenarios: bool,
}

impl GenParams {
    /// The built-in sample county: about 560,000 voters in 18 townships.
    pub fn sample() -> Self {
        GenParams {
            seed: 2026,
            county_name: "青山县".into(),
            townships: 18,
            population: 700_000,
            voters_per_station: 1_200,
            scenarios: true,
        }
    }
}

/// SplitMix64: tiny, fast and good enough for synthetic data; not for anything secret.
pub struct Rng(pub u64);

impl Rng {
    #[allow(clippy::should_implement_trait)] // An endless generator, not an iterator over data.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `low..=high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
    /// Per-mille probability.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "林", "罗", "高", "郑", "梁", "谢", "宋", "唐", "许", "韩", "冯", "邓", "曹", "彭", "曾",
    "欧阳", "司马",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明",
    "超", "秀英", "霞", "平", "刚", "桂英", "建华", "文", "华", "红", "玉兰", "志强", "海燕",
    "建国", "春梅", "国庆", "晓东", "立新",
];
const TOWNSHIP_STEMS: &[&str] = &[
    "城关", "东坝", "西河", "南山", "北岭", "石桥", "柳林", "杏花", "青龙", "白马", "黄土", "清水",
    "双河", "金鸡", "凤凰", "梅溪", "竹园", "龙泉", "桃源", "新集", "马坊", "高庄", "李家", "王集",
];
const VILLAGE_STEMS: &[&str] = &[
    "东村", "西村", "前庄", "后庄", "河湾", "山口", "坪上", "岭下", "新村", "老街", "沙沟", "枣园",
    "松林", "杨柳", "桥头", "水口", "塘坊", "花园", "社区", "居委",
];

fn person_name(rng: &mut Rng) -> String {
    format!("{}{}", rng.pick(SURNAMES), rng.pick(GIVEN))
}

/// A unit as generated, with its secret key and the voters it serves.
pub struct GenUnit {
    pub id: UnitId,
    pub name: String,
    pub kind: &'static str,
    pub township: usize,
    pub contests: Vec<ContestId>,
    pub registered_voters: u64,
    pub key: SigningKey,
}

pub struct GenContest {
    pub id: ContestId,
    pub name: String,
    pub level: Level,
    pub township: usize,
    pub seats: u32,
    pub registered_voters: u64,
    pub candidates: Vec<(CandidateId, String)>,
    /// Each candidate's approval share of valid ballots, in per-mille.
    shares: Vec<u64>,
}

pub struct GenTownship {
    pub id: String,
    pub name: String,
    pub population: u64,
}

/// A generated county: its definition files, keys and sheets.
pub struct Generated {
    pub params: GenParams,
    pub townships: Vec<GenTownship>,
    /// Each township's countersigning key, in the order of `townships`.
    pub township_keys: Vec<(TownshipId, SigningKey)>,
    pub contests: Vec<GenContest>,
    pub units: Vec<GenUnit>,
    /// Every sheet to submit, in a plausible arrival order: round 1, corrections, later rounds.
    pub sheets: Vec<TallySheet>,
    /// What was planted, for the README of the generated folder.
    pub scenarios: Vec<String>,
}

/// Splits `seats` into constituencies of 1 to 3 seats, mostly 2 and 3.
fn split_seats(rng: &mut Rng, mut seats: u64) -> Vec<u32> {
    let mut out = Vec::new();
    while seats > 0 {
        let take = match seats {
            1..=3 => seats,
            _ => {
                if rng.chance(150) {
                    1
                } else if rng.chance(500) {
                    2
                } else {
                    3
                }
            }
        };
        out.push(take as u32);
        seats -= take;
    }
    out
}

/// Art 31: between ceil(4S/3) and 2S candidates; generated contests use the lower end mostly.
fn candidate_count(rng: &mut Rng, seats: u32) -> usize {
    let low = (4 * seats).div_ceil(3);
    let high = 2 * seats;
    rng.range(u64::from(low), u64::from(high)) as usize
}

fn normal_shares(rng: &mut Rng, seats: u32, candidates: usize) -> Vec<u64> {
    let mut shares: Vec<u64> = (0..candidates)
        .map(|i| {
            if i < seats as usize {
                rng.range(600, 850)
            } else {
                rng.range(50, 300)
            }
        })
        .collect();
    // A ballot approves at most `seats` people, so the shares may not sum past seats.
    let sum: u64 = shares.iter().sum();
    let cap = u64::from(seats) * 960;
    if sum > cap {
        for s in &mut shares {
            *s = *s * cap / sum;
        }
    }
    // Shuffle so the winners are not always listed first.
    for i in (1..shares.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        shares.swap(i, j);
    }
    shares
}

pub fn generate(params: &GenParams) -> Result<Generated> {
    if params.townships == 0 || params.townships > 5_000 {
        bail!("--townships must be 1 to 5000, not {}", params.townships);
    }
    if params.voters_per_station == 0 {
        bail!("--voters-per-station must be at least 1");
    }
    let mut rng = Rng(params.seed);
    let rules_method = Method::LargestRemainderHare;

    // Township populations: uneven, summing to the county's.
    let weights: Vec<u64> = (0..params.townships).map(|_| rng.range(50, 150)).collect();
    let weight_sum: u64 = weights.iter().sum();
    let mut townships: Vec<GenTownship> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let stem = TOWNSHIP_STEMS[i % TOWNSHIP_STEMS.len()];
            let suffix = if i % 3 == 0 { "镇" } else { "乡" };
            let round_no = i / TOWNSHIP_STEMS.len();
            let name = if round_no == 0 {
                format!("{stem}{suffix}")
            } else {
                format!("{stem}{round_no}{suffix}")
            };
            GenTownship {
                id: format!("T{:02}", i + 1),
                name,
                population: params.population * w / weight_sum,
            }
        })
        .collect();
    let assigned: u64 = townships.iter().map(|t| t.population).sum();
    townships[0].population += params.population - assigned;
    // Derived from the seed apart from `rng`, as unit keys are, so adding them changed no
    // other generated number.
    let township_keys: Vec<(TownshipId, SigningKey)> = townships
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                TownshipId::new(t.id.clone()),
                SigningKey::from_bytes(&sha2_free_key::derive_township(params.seed, i as u64)),
            )
        })
        .collect();

    // County congress seats, apportioned to townships by population, at least one each.
    let county_total = congress_seats(
        Level::County,
        params.population,
        LawRevision::Rev2020,
        SeatRounding::Floor,
        0,
    )
    .context("a generated county needs at least 50,000 people")?
    .total;
    let populations: Vec<u64> = townships.iter().map(|t| t.population).collect();
    let bounds = vec![Bounds { min: 1, max: None }; townships.len()];
    let county_seats = apportion::apportion(&apportion::Request {
        weights: &populations,
        seats: county_total as u32,
        method: rules_method,
        bounds: &bounds,
        tie_rule: TieRule::DefinitionOrder,
    })
    .context("apportioning county seats to townships")?
    .seats;

    let mut contests = Vec::new();
    let mut units: Vec<GenUnit> = Vec::new();
    for (ti, township) in townships.iter().enumerate() {
        let township_total = congress_seats(
            Level::Township,
            township.population,
            LawRevision::Rev2020,
            SeatRounding::Floor,
            0,
        )
        .with_context(|| format!("township {} is too small to generate", township.id))?
        .total;
        let township_split = split_seats(&mut rng, township_total);
        let county_split = split_seats(&mut rng, u64::from(county_seats[ti]));
        let voters_total = township.population * 80 / 100;
        let seats_total: u64 = township_split.iter().map(|&s| u64::from(s)).sum();

        // County constituencies first, so township constituencies can be assigned to them.
        let county_first = contests.len();
        for (ci, &seats) in county_split.iter().enumerate() {
            contests.push(new_contest(
                &mut rng,
                format!("{}-C{:02}", township.id, ci + 1),
                format!("{}第{}选区(县)", township.name, ci + 1),
                Level::County,
                ti,
                seats,
            ));
        }
        for (xi, &seats) in township_split.iter().enumerate() {
            let township_contest = contests.len();
            contests.push(new_contest(
                &mut rng,
                format!("{}-X{:02}", township.id, xi + 1),
                format!("{}第{}选区", township.name, xi + 1),
                Level::Township,
                ti,
                seats,
            ));
            // Each township constituency lies inside one county constituency, chosen so that
            // a county constituency's voters follow its seats (Art 15, 26): the township
            // constituency's midpoint along the township's voters falls in the county
            // constituency's share of the county seats.
            let seats_before: u64 = township_split[..xi].iter().map(|&s| u64::from(s)).sum();
            let midpoint_halves = 2 * seats_before + u64::from(seats);
            let county_seats_total: u64 = county_split.iter().map(|&s| u64::from(s)).sum();
            let mut county_seats_through = 0u64;
            let mut county_offset = county_split.len() - 1;
            for (k, &county_seats) in county_split.iter().enumerate() {
                county_seats_through += u64::from(county_seats);
                if u128::from(midpoint_halves) * u128::from(county_seats_total)
                    < 2 * u128::from(county_seats_through) * u128::from(seats_total)
                {
                    county_offset = k;
                    break;
                }
            }
            let county_contest = county_first + county_offset;
            let voters = voters_total * u64::from(seats) / seats_total;
            let stations = (voters / params.voters_per_station).max(1);
            let mobile = rng.chance(300);
            let assembly = !mobile && stations == 1 && rng.chance(150);
            let mobile_voters = if mobile { voters / 12 } else { 0 };
            let station_voters = voters - mobile_voters;
            let village = rng.pick(VILLAGE_STEMS);
            for s in 0..stations {
                let share =
                    station_voters / stations + if s == 0 { station_voters % stations } else { 0 };
                let (kind, label) = if assembly {
                    ("assembly", "选举大会")
                } else {
                    ("station", "投票站")
                };
                units.push(new_unit(
                    params.seed,
                    &township.id,
                    units.len(),
                    format!("{}{}{}第{}{}", township.name, village, xi + 1, s + 1, label),
                    kind,
                    ti,
                    vec![
                        contests[county_contest].id.clone(),
                        contests[township_contest].id.clone(),
                    ],
                    share,
                ));
            }
            if mobile {
                units.push(new_unit(
                    params.seed,
                    &township.id,
                    units.len(),
                    format!("{}{}{}流动票箱", township.name, village, xi + 1),
                    "mobile-box",
                    ti,
                    vec![
                        contests[county_contest].id.clone(),
                        contests[township_contest].id.clone(),
                    ],
                    mobile_voters,
                ));
            }
        }
    }
    // Unit ids are numbered per township.
    let mut per_township = vec![0usize; townships.len()];
    for u in &mut units {
        per_township[u.township] += 1;
        u.id = UnitId::new(format!(
            "{}-U{:03}",
            townships[u.township].id, per_township[u.township]
        ));
    }
    // A contest's roll is the sum of its units' rolls.
    let position: std::collections::HashMap<ContestId, usize> = contests
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.clone(), i))
        .collect();
    for u in &units {
        for c in &u.contests {
            contests[position[c]].registered_voters += u.registered_voters;
        }
    }
    // Contests no unit serves (a county constituency that got no township constituency) are
    // folded away: give their seats to the previous county constituency of the township if
    // that stays within 3 seats, else drop them (synthetic data only).
    contests.retain(|c| c.registered_voters > 0);

    let mut generated = Generated {
        params: params.clone(),
        townships,
        township_keys,
        contests,
        units,
        sheets: Vec::new(),
        scenarios: Vec::new(),
    };
    if params.scenarios {
        plant_scenarios(&mut generated, &mut rng);
    }
    generated.sheets = first_round_sheets(&generated, &mut rng);
    if params.scenarios {
        add_scenario_sheets(&mut generated, &mut rng);
    }
    Ok(generated)
}

fn new_contest(
    rng: &mut Rng,
    id: String,
    name: String,
    level: Level,
    township: usize,
    seats: u32,
) -> GenContest {
    let count = candidate_count(rng, seats);
    let mut names = std::collections::HashSet::new();
    let candidates = (0..count)
        .map(|i| {
            let mut name = person_name(rng);
            while !names.insert(name.clone()) {
                name = person_name(rng);
            }
            (CandidateId::new(format!("{id}-{}", i + 1)), name)
        })
        .collect();
    let shares = normal_shares(rng, seats, count);
    GenContest {
        id: ContestId::new(id),
        name,
        level,
        township,
        seats,
        registered_voters: 0,
        candidates,
        shares,
    }
}

#[allow(clippy::too_many_arguments)] // A private constructor of plain data.
fn new_unit(
    seed: u64,
    township_id: &str,
    serial: usize,
    name: String,
    kind: &'static str,
    township: usize,
    contests: Vec<ContestId>,
    registered_voters: u64,
) -> GenUnit {
    use sha2_free_key::derive;
    GenUnit {
        id: UnitId::new(format!("{township_id}-U{serial}")),
        name,
        kind,
        township,
        contests,
        registered_voters,
        key: SigningKey::from_bytes(&derive(seed, serial as u64)),
    }
}

/// Derives synthetic secret keys from the seed. Not for real elections.
mod sha2_free_key {
    /// A unit's key.
    pub fn derive(seed: u64, serial: u64) -> [u8; 32] {
        from_state(seed ^ 0x005E_ED0F_4BE7 ^ serial.wrapping_mul(0x9E37_79B9))
    }

    /// A township's key: another constant than units', so the two streams do not meet (the
    /// definition loader would refuse a township key equal to a unit's).
    pub fn derive_township(seed: u64, serial: u64) -> [u8; 32] {
        from_state(seed ^ 0x7057_5E4D_0C5B_0000 ^ serial.wrapping_mul(0x9E37_79B9))
    }

    /// A committee official's key: a third stream.
    pub fn derive_official(seed: u64, serial: u64) -> [u8; 32] {
        from_state(seed ^ 0x0FF1_C1A1_0000_0000 ^ serial.wrapping_mul(0x9E37_79B9))
    }

    fn from_state(state: u64) -> [u8; 32] {
        let mut rng = super::Rng(state);
        let mut key = [0u8; 32];
        for chunk in key.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes());
        }
        key
    }
}

/// The planted cases: which contest shows what. Shares are per-mille of valid ballots.
struct Planted {
    contest: usize,
    what: &'static str,
}

fn find_contest(
    g: &Generated,
    level: Level,
    seats: u32,
    candidates: usize,
    skip: &[usize],
) -> Option<usize> {
    g.contests.iter().enumerate().position(|(i, c)| {
        c.level == level
            && c.seats == seats
            && c.candidates.len() == candidates
            && !skip.contains(&i)
    })
}

fn planted(g: &Generated) -> Vec<Planted> {
    let mut used = Vec::new();
    let mut out = Vec::new();
    // New cases go at the end, so the contests of the earlier ones stay where they were.
    let wanted: [(&str, Level, u32, usize); 7] = [
        ("tie", Level::Township, 2, 3),
        ("further", Level::Township, 2, 3),
        ("vacancy", Level::Township, 1, 2),
        ("void-art44", Level::County, 2, 3),
        ("turnout", Level::Township, 3, 4),
        ("cutoff-tie", Level::Township, 3, 5),
        ("write-in", Level::Township, 2, 3),
    ];
    for (what, level, seats, candidates) in wanted {
        if let Some(i) = find_contest(g, level, seats, candidates, &used) {
            used.push(i);
            out.push(Planted { contest: i, what });
        }
    }
    out
}

fn plant_scenarios(g: &mut Generated, _rng: &mut Rng) {
    for p in planted(g) {
        let c = &mut g.contests[p.contest];
        let note = match p.what {
            "tie" => {
                c.shares = vec![700, 560, 560];
                format!(
                    "{} {}: the 2nd and 3rd candidates tie for the last seat; round 2 is another vote between them (再次投票)",
                    c.id, c.name
                )
            }
            "further" => {
                c.shares = vec![720, 430, 380];
                format!(
                    "{} {}: only one candidate passes the majority; round 2 is a further election (另行选举) for one seat",
                    c.id, c.name
                )
            }
            "vacancy" => {
                c.shares = vec![450, 400];
                format!(
                    "{} {}: no one passes; the further election in round 2 gives no one a third of the ballots, so the seat stays vacant",
                    c.id, c.name
                )
            }
            "void-art44" => format!(
                "{} {}: one unit found more ballots in the box than it issued; the vote is void as a whole (Art 44) and held again in round 2",
                c.id, c.name
            ),
            "cutoff-tie" => {
                // A passes; the further election for 2 seats lists 3: B, C, and one of D and
                // E, who have exactly the same votes at every unit.
                c.shares = vec![700, 400, 350, 300, 300];
                format!(
                    "{} {}: only one candidate passes; the further election's list of three ties at its last place (the 4th and 5th candidates); the committee decides who stands (tally committee cutoff-tie), then round 2 is the further election, voted with the 4th",
                    c.id, c.name
                )
            }
            "write-in" => format!(
                "{} {}: voters wrote in one person spelled two ways (刘华, 刘桦); the committee merges the spellings (tally committee write-ins)",
                c.id, c.name
            ),
            _ => format!(
                "{} {}: not more than half of the voters voted (Art 45); round 2 holds the vote again",
                c.id, c.name
            ),
        };
        g.scenarios.push(note);
    }
}

const ELECTION_DAY: (i64, u32, u32) = (2026, 11, 28);

fn closed_at(rng: &mut Rng, day_offset: u32) -> CountClosedAt {
    let (y, m, d) = ELECTION_DAY;
    let hour = rng.range(17, 22) as u32;
    let minute = rng.range(0, 59) as u32;
    CountClosedAt {
        unix_seconds: unix_seconds(y, m, d + day_offset, hour, minute, 0, 480),
        utc_offset_minutes: 480,
    }
}

/// One sheet for a unit in a contest, with the given turnout and shares (per mille of valid).
#[allow(clippy::too_many_arguments)] // A private helper; a struct would only rename the arguments.
fn make_sheet(
    rng: &mut Rng,
    unit: &GenUnit,
    contest: &GenContest,
    round: u32,
    candidates: &[usize],
    shares: &[u64],
    turnout_per_mille: u64,
    day_offset: u32,
) -> TallySheet {
    let registered = unit.registered_voters;
    let issued = registered * turnout_per_mille / 1000;
    let collected = issued - (issued / 400).min(rng.range(0, 2));
    let void = collected * rng.range(2, 12) / 1000;
    let valid = collected - void;
    let blank = valid * rng.range(0, 5) / 1000;
    let markable = valid - blank;
    let mut counts: Vec<CandidateCount> = Vec::new();
    let mut marks = 0;
    for (i, &ci) in candidates.iter().enumerate() {
        let approvals = markable * shares[i] / 1000;
        marks += approvals;
        counts.push(CandidateCount {
            candidate: contest.candidates[ci].0.clone(),
            approvals,
            disapprovals: None,
            abstentions: None,
        });
    }
    let seats = u64::from(contest.seats);
    let mut write_ins = Vec::new();
    if rng.chance(200) && marks + 3 <= valid * seats {
        // Voters write in someone not on the ballot (另选他人); a candidate's own name would
        // be a clerk's error (E114), so the generator never writes one.
        let mut name = person_name(rng);
        while contest.candidates.iter().any(|(_, c)| c == &name) {
            name = person_name(rng);
        }
        write_ins.push(WriteIn {
            name,
            votes: rng.range(1, 3),
        });
    }
    let scrutineers_n = if unit.kind == "mobile-box" {
        3
    } else {
        rng.range(2, 3)
    };
    TallySheet {
        unit: unit.id.clone(),
        contest: contest.id.clone(),
        round: Round(round),
        version: 1,
        replaces_version: None,
        registered_voters: registered,
        ballots_issued: issued,
        ballots_collected: collected,
        ballots_void: void,
        ballots_valid: valid,
        ballots_blank: blank,
        proxies: issued / 300,
        candidates: counts,
        write_ins,
        scrutineers: (0..scrutineers_n).map(|_| person_name(rng)).collect(),
        counters: (0..2).map(|_| person_name(rng)).collect(),
        count_closed_at: closed_at(rng, day_offset),
    }
}

fn units_of<'a>(g: &'a Generated, contest: &ContestId) -> Vec<&'a GenUnit> {
    g.units
        .iter()
        .filter(|u| u.contests.contains(contest))
        .collect()
}

fn first_round_sheets(g: &Generated, rng: &mut Rng) -> Vec<TallySheet> {
    let planted = if g.params.scenarios {
        planted(g)
    } else {
        Vec::new()
    };
    let position: std::collections::HashMap<&ContestId, usize> = g
        .contests
        .iter()
        .enumerate()
        .map(|(i, c)| (&c.id, i))
        .collect();
    let mut sheets = Vec::with_capacity(g.units.len() * 2);
    for unit in &g.units {
        for contest_id in &unit.contests {
            let Some(&ci) = position.get(contest_id) else {
                continue;
            };
            let contest = &g.contests[ci];
            let what = planted.iter().find(|p| p.contest == ci).map(|p| p.what);
            let turnout = match what {
                Some("turnout") => 430,
                _ => rng.range(820, 960),
            };
            let all: Vec<usize> = (0..contest.candidates.len()).collect();
            let mut sheet = make_sheet(rng, unit, contest, 1, &all, &contest.shares, turnout, 0);
            if what == Some("write-in") {
                // One spelling at the contest's first unit, the other at its second (or at
                // the first too, when one unit serves the contest).
                let units = units_of(g, contest_id);
                let second = units.get(1).unwrap_or(&units[0]);
                let mut spelled = Vec::new();
                if units[0].id == unit.id {
                    spelled.push(("刘华", 4));
                }
                if second.id == unit.id {
                    spelled.push(("刘桦", 3));
                }
                if !spelled.is_empty() {
                    sheet.write_ins = spelled
                        .into_iter()
                        .map(|(name, votes)| WriteIn {
                            name: name.to_owned(),
                            votes,
                        })
                        .collect();
                }
            }
            if what == Some("void-art44") && units_of(g, contest_id)[0].id == unit.id {
                // Three ballots too many in the box: legal data, void contest (Art 44).
                sheet.ballots_collected = sheet.ballots_issued + 3;
                sheet.ballots_valid = sheet.ballots_collected - sheet.ballots_void;
            }
            sheets.push(sheet);
        }
    }
    sheets
}

fn add_scenario_sheets(g: &mut Generated, rng: &mut Rng) {
    let mut extra = Vec::new();
    for p in planted(g) {
        let contest = &g.contests[p.contest];
        if p.what == "write-in" {
            // Decided in round 1; the committee only adjudicates the names.
            continue;
        }
        let (candidates, shares): (Vec<usize>, Vec<u64>) = match p.what {
            "tie" => (vec![1, 2], vec![610, 330]),
            // The further election between B, C and D (the committee's choice of the tied).
            "cutoff-tie" => (vec![1, 2, 3], vec![600, 450, 300]),
            "further" => (vec![1, 2], vec![560, 380]),
            "vacancy" => (vec![0, 1], vec![300, 280]),
            _ => (
                (0..contest.candidates.len()).collect(),
                contest.shares.clone(),
            ),
        };
        let shares = if p.what == "void-art44" || p.what == "turnout" {
            normal_shares(rng, contest.seats, contest.candidates.len())
        } else {
            shares
        };
        for unit in units_of(g, &contest.id) {
            let turnout = rng.range(800, 900);
            extra.push(make_sheet(
                rng,
                unit,
                contest,
                2,
                &candidates,
                &shares,
                turnout,
                7,
            ));
        }
    }
    // A correction: the first unit's county sheet is reissued with one void ballot found valid.
    if let Some(first) = g.sheets.first().cloned() {
        let mut corrected = first.clone();
        corrected.version = 2;
        corrected.replaces_version = Some(1);
        if corrected.ballots_void > 0 {
            corrected.ballots_void -= 1;
            corrected.ballots_valid += 1;
        }
        g.scenarios.push(format!(
            "{}: a correction (version 2) replaces the first report of unit {} for contest {}",
            first.unit, first.unit, first.contest
        ));
        g.sheets.push(corrected);
    }
    g.sheets.extend(extra);
}

// ---- Writing the generated county as the files an election office keeps. ----

pub struct GeneratedFiles {
    pub definition_toml: String,
    pub townships_csv: String,
    pub contests_csv: String,
    pub candidates_csv: String,
    pub units_csv: String,
    /// SAMPLE ONLY: the units' secret keys, so sheets can be signed again.
    pub unit_keys_csv: String,
    /// SAMPLE ONLY: the townships' secret keys, so batches can be countersigned.
    pub township_keys_csv: String,
    /// SAMPLE ONLY: the committee officials' secret keys, so amendments can be signed.
    pub official_keys_csv: String,
}

/// Appends one row to a CSV file through the `csv` crate (RFC 4180 quoting, `\r` too).
///
/// These files are the election definition's input, read back by `tally_core::definition`,
/// so cells are written exactly as they are: no spreadsheet-formula guard here (an apostrophe
/// would become part of a name), unlike the CSV that `tally` writes for people to open.
fn push_row(out: &mut String, cells: &[&str]) {
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing to a Vec does no I/O: nothing can fail.
    writer
        .write_record(cells)
        .expect("writing CSV into memory cannot fail");
    let bytes = writer
        .into_inner()
        .expect("flushing CSV into memory cannot fail");
    // UTF-8 cells, and the csv crate adds only ASCII quotes, commas and newlines.
    out.push_str(std::str::from_utf8(&bytes).expect("CSV of UTF-8 cells is UTF-8"));
}

pub fn files(g: &Generated) -> GeneratedFiles {
    let p = &g.params;
    let mut definition_toml = String::new();
    // Writing to a String cannot fail.
    let officials: String = g
        .official_keys()
        .iter()
        .map(|(id, name, key)| {
            format!(
                "  {{ id = \"{id}\", name = \"{name}\", public_key = \"{}\" }},\n",
                hex::encode(key.verifying_key().as_bytes())
            )
        })
        .collect();
    let _ = write!(
        definition_toml,
        r#"# A synthetic county generated by `tally gen --seed {seed}`. Fictional places and people.
townships_csv = "townships.csv"
contests_csv = "contests.csv"
candidates_csv = "candidates.csv"
units_csv = "units.csv"

[election]
id = "{election_id}"
name = "{county}2026年县乡两级人民代表大会代表换届选举"
# A synthetic county is never the real election: everything it prints says 演练 / REHEARSAL.
mode = "rehearsal"

[rules]
law_revision = "2020"
seat_rounding = "floor"
mobile_box_scrutineers_min = 2
further_election_turnout_required = true
further_election_threshold_base = "collected"
apportionment = "largest-remainder-hare"
apportionment_tie_rule = "report"
record_disapprovals = false

# The county election committee: any {threshold} of its officials sign an amendment
# (`tally amend`). Their secret keys are in official-keys.csv: SAMPLE ONLY.
[committee]
threshold = {threshold}
officials = [
{officials}]

[county]
id = "{county_id}"
name = "{county}"
population = {population}
"#,
        threshold = COMMITTEE_THRESHOLD,
        seed = p.seed,
        county_id = COUNTY_ID,
        election_id = ELECTION_ID,
        county = p.county_name,
        population = p.population,
    );
    let mut townships_csv = String::from("id,name,population,public_key\n");
    let mut township_keys_csv = String::from(
        "# SAMPLE ONLY: secret keys of fictional townships, published so anyone can countersign the sample.\ntownship,secret_key\n",
    );
    for (t, (_, key)) in g.townships.iter().zip(&g.township_keys) {
        push_row(
            &mut townships_csv,
            &[
                t.id.as_str(),
                &t.name,
                &t.population.to_string(),
                &hex::encode(key.verifying_key().as_bytes()),
            ],
        );
        push_row(
            &mut township_keys_csv,
            &[t.id.as_str(), &hex::encode(key.to_bytes())],
        );
    }
    let mut contests_csv = String::from("id,level,township,name,seats,registered_voters\n");
    let mut candidates_csv = String::from("contest,id,name\n");
    for c in &g.contests {
        push_row(
            &mut contests_csv,
            &[
                c.id.as_str(),
                c.level.name(),
                g.townships[c.township].id.as_str(),
                &c.name,
                &c.seats.to_string(),
                &c.registered_voters.to_string(),
            ],
        );
        for (id, name) in &c.candidates {
            push_row(&mut candidates_csv, &[c.id.as_str(), id.as_str(), name]);
        }
    }
    let mut units_csv = String::from("id,name,kind,township,contests,public_key\n");
    let mut unit_keys_csv = String::from(
        "# SAMPLE ONLY: secret keys of fictional units, published so anyone can re-sign the sample.\nunit,secret_key\n",
    );
    for u in &g.units {
        let contests: Vec<&str> = u.contests.iter().map(|c| c.as_str()).collect();
        push_row(
            &mut units_csv,
            &[
                u.id.as_str(),
                &u.name,
                u.kind,
                g.townships[u.township].id.as_str(),
                &contests.join(";"),
                &hex::encode(u.key.verifying_key().as_bytes()),
            ],
        );
        push_row(
            &mut unit_keys_csv,
            &[u.id.as_str(), &hex::encode(u.key.to_bytes())],
        );
    }
    let mut official_keys_csv = String::from(
        "# SAMPLE ONLY: secret keys of fictional committee officials, published so anyone can sign the sample's amendments.\nofficial,secret_key\n",
    );
    for (id, _, key) in g.official_keys() {
        push_row(
            &mut official_keys_csv,
            &[id.as_str(), &hex::encode(key.to_bytes())],
        );
    }
    GeneratedFiles {
        official_keys_csv,
        definition_toml,
        townships_csv,
        contests_csv,
        candidates_csv,
        units_csv,
        unit_keys_csv,
        township_keys_csv,
    }
}

/// The county id of every generated county.
pub const COUNTY_ID: &str = "QS";
/// The election id of every generated county; its mode is always rehearsal.
pub const ELECTION_ID: &str = "QS-2026";

/// A generated county's committee: [`COMMITTEE_NAMES`]'s officials, any this many of whom
/// sign an act.
pub const COMMITTEE_THRESHOLD: u32 = 3;

/// The generated committee's officials, `O1` to `O5`, by office.
pub const COMMITTEE_NAMES: [&str; 5] = ["主任", "副主任", "委员甲", "委员乙", "委员丙"];

impl Generated {
    /// The committee's officials: id, name and secret key (derived from the seed apart from
    /// everything else, so adding them changed no other generated number).
    pub fn official_keys(&self) -> Vec<(String, String, SigningKey)> {
        COMMITTEE_NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                (
                    format!("O{}", i + 1),
                    (*name).to_owned(),
                    SigningKey::from_bytes(&sha2_free_key::derive_official(
                        self.params.seed,
                        i as u64,
                    )),
                )
            })
            .collect()
    }

    /// The election the generated definition names (a rehearsal), to sign sheets for.
    pub fn election(&self) -> tally_core::definition::Election {
        tally_core::definition::Election {
            id: ELECTION_ID.into(),
            name: format!(
                "{}2026年县乡两级人民代表大会代表换届选举",
                self.params.county_name
            ),
            mode: tally_core::definition::Mode::Rehearsal,
        }
    }
}

/// Signs every generated sheet with its unit's key, in parallel (a province has 200,000).
pub fn sign_all(g: &Generated) -> Vec<tally_proto::SignedSheet> {
    let election = g.election();
    use rayon::prelude::*;
    let keys: std::collections::HashMap<&UnitId, &SigningKey> =
        g.units.iter().map(|u| (&u.id, &u.key)).collect();
    g.sheets
        .par_iter()
        .map(|s| tally_proto::sign(s, keys[&s.unit], &election))
        .collect()
}

/// Loads the generated definition as `tally-core` would from the files, without touching disk.
pub fn definition(g: &Generated) -> Result<tally_core::definition::Definition> {
    let files = files(g);
    let mut read_sibling = |name: &str| -> Result<String, String> {
        match name {
            "townships.csv" => Ok(files.townships_csv.clone()),
            "contests.csv" => Ok(files.contests_csv.clone()),
            "candidates.csv" => Ok(files.candidates_csv.clone()),
            "units.csv" => Ok(files.units_csv.clone()),
            other => Err(format!("the generator writes no file {other}")),
        }
    };
    tally_core::definition::load("election.toml", &files.definition_toml, &mut read_sibling)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> GenParams {
        GenParams {
            seed: 5,
            county_name: "测试县".into(),
            townships: 3,
            population: 120_000,
            voters_per_station: 2_000,
            scenarios: false,
        }
    }

    // Goal: every township gets its own countersigning key, the same for the same seed,
    // registered in townships.csv and written to township-keys.csv, and a batch it
    // countersigns verifies against the generated definition.
    // Method: generate twice from one seed and once from another; load the definition; look
    // each key up by id; countersign the first township's sheets and verify.
    #[test]
    fn township_keys_are_deterministic_and_registered() {
        let g = generate(&small()).unwrap();
        let again = generate(&small()).unwrap();
        let other = generate(&GenParams { seed: 6, ..small() }).unwrap();
        assert_eq!(g.township_keys.len(), g.townships.len());
        for ((a, b), c) in g
            .township_keys
            .iter()
            .zip(&again.township_keys)
            .zip(&other.township_keys)
        {
            assert_eq!(a.0, b.0);
            assert_eq!(a.1.to_bytes(), b.1.to_bytes());
            assert_ne!(a.1.to_bytes(), c.1.to_bytes());
        }

        let definition = definition(&g).unwrap();
        for (id, key) in &g.township_keys {
            let key_id = tally_core::ids::KeyId::of(&key.verifying_key());
            assert_eq!(&definition.township_by_key(&key_id).unwrap().id, id);
        }
        let files = files(&g);
        assert!(
            files
                .townships_csv
                .starts_with("id,name,population,public_key\n")
        );
        for (id, key) in &g.township_keys {
            let line = format!("{id},{}\n", hex::encode(key.to_bytes()));
            assert!(files.township_keys_csv.contains(&line), "{id}");
        }

        let (township, key) = &g.township_keys[0];
        let signed: Vec<_> = sign_all(&g)
            .into_iter()
            .filter(|s| {
                tally_proto::decode_sheet(&s.sheet)
                    .is_ok_and(|sheet| sheet.unit.as_str().starts_with(township.as_str()))
            })
            .collect();
        assert!(!signed.is_empty());
        assert_eq!(definition.election, g.election());
        let countersignature = tally_proto::countersign(&g.election(), township, &signed, key);
        tally_proto::verify_countersignature(&definition, township, &signed, &countersignature)
            .unwrap();
    }
}
