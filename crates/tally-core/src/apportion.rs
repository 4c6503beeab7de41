//! Seat apportionment by population or votes, in exact integer arithmetic.
//!
//! Congress seats are apportioned to townships and constituencies by population, and the same
//! methods allocate seats among party lists by votes ([`allocate_lists`]). Every comparison is
//! made by cross-multiplying integers in `u128`: a floating-point rounding difference must never
//! move a seat, and two tally nodes must always reach the same answer.
//!
//! # Methods
//! - Largest remainder (Hamilton) with the Hare quota `total / seats` (kept as an exact
//!   fraction) or the Droop quota `floor(total / (seats + 1)) + 1`: every unit gets its whole
//!   quotas, the seats left over go to the largest remainders.
//! - Divisor methods: seats are handed out one at a time to the unit with the highest priority
//!   `weight / d(s)`, `s` being the seats it already holds. D'Hondt `d(s) = s + 1`,
//!   Sainte-Laguë `d(s) = s + 1/2`, Huntington-Hill `d(s) = sqrt(s(s + 1))` (compared through
//!   squares), Adams `d(s) = s` and Dean `d(s) = 2s(s + 1) / (2s + 1)`. Where `d(0) = 0` the
//!   priority is infinite, so every unit with a positive weight gets a first seat before any
//!   unit gets a second.
//!
//! # Ties
//! Ties are outcomes, not errors, and are never broken silently. When the last seats would go
//! to more units of exactly equal priority (or remainder) than there are seats left, the
//! [`TieRule`] decides: [`TieRule::Report`] leaves those seats unassigned and returns the
//! [`Tie`]; the other rules break it and record it in [`Apportionment::broken_ties`].
//!
//! # Bounds
//! Each unit may carry a minimum and a maximum ([`Bounds`]). The rule is the standard one for
//! bounded apportionment: a unit falling outside its bounds is fixed at the bound it crossed
//! and the remaining seats are reapportioned among the others by the same method, until no
//! unit is out of bounds.
//! - For divisor methods this fixed point is computed directly: every unit starts at its
//!   minimum and seats go by priority to units still below their maximum. The result is the
//!   one a single common divisor gives, with units clamped to their bounds.
//! - For largest remainder the fixing is done round by round. In each round only one side is
//!   fixed, the one with the larger total violation: fixing units above their maximum and
//!   units below their minimum in the same round can leave a seat count that the remaining
//!   units cannot absorb, while fixing one side this way keeps the remaining seats within the
//!   remaining units' bounds (the proof is on `bounded_largest_remainder`). If a round with a
//!   tie has to be superseded by fixing units, the tie is settled in definition order only to
//!   decide which units are fixed; a tie in the final round is handled by the tie rule.
//!
//! A unit with weight zero never receives a seat beyond its minimum.
//!
//! # Limits
//! Weights are at most [`MAX_WEIGHT`] (2^40, far above any population or vote count), seats at
//! most [`MAX_SEATS`] and units at most [`MAX_UNITS`]. Within these limits every product below
//! fits in `u128`: the largest is Huntington-Hill's `w^2 * s(s + 1)` < 2^80 * 2^34.

use crate::Error;
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The largest weight accepted, so that every cross-multiplication fits in `u128`.
pub const MAX_WEIGHT: u64 = 1 << 40;

/// The largest number of seats accepted; also bounds the seats any unit can hold.
pub const MAX_SEATS: u32 = 100_000;

/// The largest number of units accepted, so that sums of weights stay below 2^60.
pub const MAX_UNITS: usize = 1 << 20;

/// An apportionment method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Largest remainder with the Hare quota (Hamilton's method).
    LargestRemainderHare,
    /// Largest remainder with the Droop quota.
    LargestRemainderDroop,
    /// Divisor method with `d(s) = s + 1` (Jefferson's method).
    DHondt,
    /// Divisor method with `d(s) = s + 1/2` (Webster's method).
    SainteLague,
    /// Divisor method with the geometric mean `d(s) = sqrt(s(s + 1))`, used for the US House.
    HuntingtonHill,
    /// Divisor method with `d(s) = s`.
    Adams,
    /// Divisor method with the harmonic mean `d(s) = 2s(s + 1) / (2s + 1)`.
    Dean,
}

/// The kebab-case names of all methods, for error messages.
pub(crate) const METHOD_NAMES: &str = "largest-remainder-hare, largest-remainder-droop, d-hondt, \
                            sainte-lague, huntington-hill, adams, dean";

impl Method {
    /// Every method, in a fixed order.
    pub const ALL: [Method; 7] = [
        Method::LargestRemainderHare,
        Method::LargestRemainderDroop,
        Method::DHondt,
        Method::SainteLague,
        Method::HuntingtonHill,
        Method::Adams,
        Method::Dean,
    ];

    /// The kebab-case name, the same one serde reads and writes.
    pub fn name(self) -> &'static str {
        match self {
            Method::LargestRemainderHare => "largest-remainder-hare",
            Method::LargestRemainderDroop => "largest-remainder-droop",
            Method::DHondt => "d-hondt",
            Method::SainteLague => "sainte-lague",
            Method::HuntingtonHill => "huntington-hill",
            Method::Adams => "adams",
            Method::Dean => "dean",
        }
    }

    /// Splits the methods into the two families, so the algorithms need no impossible arms.
    fn kind(self) -> Kind {
        match self {
            Method::LargestRemainderHare => Kind::LargestRemainder(Quota::Hare),
            Method::LargestRemainderDroop => Kind::LargestRemainder(Quota::Droop),
            Method::DHondt => Kind::Divisor(Divisor::DHondt),
            Method::SainteLague => Kind::Divisor(Divisor::SainteLague),
            Method::HuntingtonHill => Kind::Divisor(Divisor::HuntingtonHill),
            Method::Adams => Kind::Divisor(Divisor::Adams),
            Method::Dean => Kind::Divisor(Divisor::Dean),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .into_iter()
            .find(|method| method.name() == s)
            .ok_or_else(|| Error::UnknownMethod {
                given: s.to_owned(),
            })
    }
}

/// How a tie for the last seat(s) is resolved. Ties are never broken silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TieRule {
    /// Do not break the tie: return it in the outcome and leave the contested seats unassigned.
    #[default]
    Report,
    /// The unit listed first wins (the order recorded in the definition, e.g. after lots
    /// were drawn).
    DefinitionOrder,
    /// The larger population or vote count wins; equal weights fall back to definition order.
    LargerWeightFirst,
}

/// The seats a unit must get at least and may get at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Bounds {
    /// Seats the unit gets whatever its weight.
    pub min: u32,
    /// Seats the unit may not exceed; `None` means no cap.
    pub max: Option<u32>,
}

/// One apportionment problem.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Population or votes per unit; the order is the definition order.
    pub weights: &'a [u64],
    /// Seats to apportion.
    pub seats: u32,
    /// The method to apportion by.
    pub method: Method,
    /// Bounds per unit, in the order of `weights`; an empty slice means no bounds.
    pub bounds: &'a [Bounds],
    /// What to do with a tie for the last seats.
    pub tie_rule: TieRule,
}

/// The seats per unit, and any tie met on the way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Apportionment {
    /// Seats per unit, in the order of the weights. When a tie is reported the contested
    /// seats are not given, so these sum to the requested seats minus `tie.seats`.
    pub seats: Vec<u32>,
    /// A tie for the last seats that the tie rule left for the caller to settle.
    pub tie: Option<Tie>,
    /// Ties the tie rule broke, kept so the report can show how seats were decided.
    pub broken_ties: Vec<Tie>,
}

/// Units tied for the last seats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tie {
    /// Seats in contention; fewer than the tied units.
    pub seats: u32,
    /// Indices of the tied units, ascending.
    pub units: Vec<usize>,
}

/// An electoral threshold as a fraction of all valid votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Threshold {
    /// Numerator of the fraction.
    pub numerator: u64,
    /// Denominator of the fraction; must be positive and not below the numerator.
    pub denominator: u64,
}

/// Apportions `req.seats` among the units by `req.method`, within `req.bounds`.
///
/// Bounded apportionment fixes units that fall outside their bounds at the bound they crossed
/// and reapportions the remaining seats among the others by the same method, until stable; see
/// the module documentation for how each family of methods does this. Zero seats give all
/// zeros. The result depends only on the request.
pub fn apportion(req: &Request) -> Result<Apportionment, Error> {
    let ranges = validate(req)?;
    Ok(match req.method.kind() {
        Kind::Divisor(divisor) => {
            divisor_method(req.weights, req.seats, divisor, &ranges, req.tie_rule)
        }
        Kind::LargestRemainder(quota) => {
            bounded_largest_remainder(req.weights, req.seats, quota, &ranges, req.tie_rule)
        }
    })
}

/// Allocation among lists by votes, with an electoral threshold: lists under the threshold
/// (votes * denominator < total * numerator, i.e. threshold given as a fraction of all valid
/// votes) get no seats.
pub fn allocate_lists(
    votes: &[u64],
    seats: u32,
    method: Method,
    threshold: Option<Threshold>,
    tie_rule: TieRule,
) -> Result<Apportionment, Error> {
    check_sizes(votes, seats)?;
    let mut weights = votes.to_vec();
    if let Some(threshold) = threshold {
        let Threshold {
            numerator,
            denominator,
        } = threshold;
        if denominator == 0 || numerator > denominator {
            return Err(Error::InvalidThreshold {
                numerator,
                denominator,
            });
        }
        // The total is taken over all lists, including those that will fall under the
        // threshold, because the threshold is a share of all valid votes. check_sizes keeps it
        // below 2^60, so both products fit in u128.
        let total: u128 = votes.iter().map(|&v| u128::from(v)).sum();
        for weight in &mut weights {
            if u128::from(*weight) * u128::from(denominator) < total * u128::from(numerator) {
                *weight = 0;
            }
        }
        if seats > 0 && weights.iter().all(|&w| w == 0) {
            return Err(Error::NoListReachesThreshold {
                numerator,
                denominator,
                seats,
            });
        }
    }
    apportion(&Request {
        weights: &weights,
        seats,
        method,
        bounds: &[],
        tie_rule,
    })
}

/// The two families of methods.
#[derive(Debug, Clone, Copy)]
enum Kind {
    LargestRemainder(Quota),
    Divisor(Divisor),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quota {
    Hare,
    Droop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Divisor {
    DHondt,
    SainteLague,
    HuntingtonHill,
    Adams,
    Dean,
}

/// The seats a unit may end with: its minimum and its effective maximum, which is capped at
/// the seats to apportion and, for a unit with weight zero, at its minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    min: u32,
    max: u32,
}

/// Rejects inputs whose products might not fit in `u128`.
fn check_sizes(weights: &[u64], seats: u32) -> Result<(), Error> {
    if seats > MAX_SEATS {
        return Err(Error::TooManySeats { seats });
    }
    if weights.len() > MAX_UNITS {
        return Err(Error::TooManyUnits {
            units: weights.len(),
        });
    }
    if let Some((unit, &weight)) = weights.iter().enumerate().find(|(_, w)| **w > MAX_WEIGHT) {
        return Err(Error::WeightTooLarge { unit, weight });
    }
    Ok(())
}

/// Checks the request and works out each unit's effective range.
fn validate(req: &Request) -> Result<Vec<Range>, Error> {
    let Request {
        weights,
        seats,
        bounds,
        ..
    } = *req;
    check_sizes(weights, seats)?;
    if !bounds.is_empty() && bounds.len() != weights.len() {
        return Err(Error::BoundsLength {
            bounds: bounds.len(),
            units: weights.len(),
        });
    }
    let unit_bounds = |unit: usize| bounds.get(unit).copied().unwrap_or_default();
    let mut minima: u64 = 0;
    for unit in 0..weights.len() {
        let Bounds { min, max } = unit_bounds(unit);
        if let Some(max) = max
            && min > max
        {
            return Err(Error::MinAboveMax { unit, min, max });
        }
        minima += u64::from(min);
    }
    if minima > u64::from(seats) {
        return Err(Error::MinimaExceedSeats { minima, seats });
    }
    if weights.is_empty() && seats > 0 {
        return Err(Error::NoUnits { seats });
    }
    if weights.iter().all(|&w| w == 0) && u64::from(seats) > minima {
        return Err(Error::AllWeightsZero { seats, minima });
    }
    // Every minimum is at most the seats (they sum to no more), and every maximum is at least
    // its minimum, so each range below is non-empty.
    let ranges: Vec<Range> = weights
        .iter()
        .enumerate()
        .map(|(unit, &weight)| {
            let Bounds { min, max } = unit_bounds(unit);
            let max = if weight == 0 {
                min
            } else {
                max.unwrap_or(seats).min(seats)
            };
            Range { min, max }
        })
        .collect();
    let maxima: u64 = ranges.iter().map(|r| u64::from(r.max)).sum();
    if maxima < u64::from(seats) {
        return Err(Error::MaximaBelowSeats { maxima, seats });
    }
    Ok(ranges)
}

/// A unit's claim to its next seat under a divisor method, as the exact fraction
/// `num / den`. A zero denominator is an infinite priority.
#[derive(Debug, Clone, Copy)]
struct Priority {
    num: u128,
    den: u128,
}

impl Priority {
    /// Compares by cross-multiplication, which keeps the comparison exact. Two infinite
    /// priorities compare equal and an infinite one beats every finite one, because the
    /// numerator is positive for every unit that competes for seats.
    fn compare(self, other: Priority) -> Ordering {
        (self.num * other.den).cmp(&(other.num * self.den))
    }
}

/// The priority `weight / d(held)` of a unit holding `held` seats.
fn priority(divisor: Divisor, weight: u64, held: u32) -> Priority {
    let w = u128::from(weight);
    let s = u128::from(held);
    let (num, den) = match divisor {
        Divisor::DHondt => (w, s + 1),
        // w / (s + 1/2), scaled by 2 to stay integral.
        Divisor::SainteLague => (2 * w, 2 * s + 1),
        // The square root is avoided by comparing squared priorities, which order the same.
        Divisor::HuntingtonHill => (w * w, s * (s + 1)),
        Divisor::Adams => (w, s),
        // w / (2s(s + 1) / (2s + 1)).
        Divisor::Dean => (w * (2 * s + 1), 2 * s * (s + 1)),
    };
    Priority { num, den }
}

/// Breaks `tie` by `rule`: each unit the rule picks gets one of the contested seats and the
/// tie is recorded as broken; `Err(tie)` when the rule leaves it to be reported.
fn break_tie(
    rule: TieRule,
    weights: &[u64],
    tie: Tie,
    held: &mut [u32],
    broken_ties: &mut Vec<Tie>,
) -> Result<(), Tie> {
    let Some(winners) = tie_winners(rule, weights, &tie) else {
        return Err(tie);
    };
    for unit in winners {
        held[unit] += 1;
    }
    broken_ties.push(tie);
    Ok(())
}

/// The units a tie rule picks for the contested seats, or `None` if the tie is to be reported.
fn tie_winners(rule: TieRule, weights: &[u64], tie: &Tie) -> Option<Vec<usize>> {
    let mut order = tie.units.clone();
    match rule {
        TieRule::Report => return None,
        // tie.units is already ascending, which is definition order.
        TieRule::DefinitionOrder => {}
        TieRule::LargerWeightFirst => {
            order.sort_by(|&a, &b| weights[b].cmp(&weights[a]).then(a.cmp(&b)));
        }
    }
    order.truncate(tie.seats as usize);
    Some(order)
}

/// A divisor method with bounds: every unit starts at its minimum and seats go one by one to
/// the highest priority among units below their maximum. The result is the bounded
/// apportionment the fix-and-reapportion rule converges to, found in one pass.
///
/// Runs in O(seats * units).
fn divisor_method(
    weights: &[u64],
    seats: u32,
    divisor: Divisor,
    ranges: &[Range],
    rule: TieRule,
) -> Apportionment {
    let mut held: Vec<u32> = ranges.iter().map(|r| r.min).collect();
    let mut broken_ties = Vec::new();
    // validate checked that the minimums sum to at most the seats.
    let mut left = seats - held.iter().sum::<u32>();
    let mut leaders: Vec<usize> = Vec::new();
    while left > 0 {
        let mut best: Option<Priority> = None;
        leaders.clear();
        // A unit with weight zero has its range capped at its minimum, so it never competes.
        for unit in (0..weights.len()).filter(|&u| held[u] < ranges[u].max) {
            let claim = priority(divisor, weights[unit], held[unit]);
            match best.map(|b| claim.compare(b)) {
                None | Some(Ordering::Greater) => {
                    best = Some(claim);
                    leaders.clear();
                    leaders.push(unit);
                }
                Some(Ordering::Equal) => leaders.push(unit),
                Some(Ordering::Less) => {}
            }
        }
        // validate checked that the maximums sum to at least the seats, so while seats are
        // left some unit is below its maximum and leaders is not empty.
        debug_assert!(!leaders.is_empty());
        // MAX_UNITS fits in u32.
        let tied = leaders.len() as u32;
        if tied <= left {
            // Each leader's priority drops once it gets a seat, so handing all of them one at
            // once is what one-at-a-time would do; equal priorities here are no tie.
            for &unit in &leaders {
                held[unit] += 1;
            }
            left -= tied;
            continue;
        }
        let tie = Tie {
            seats: left,
            units: leaders.clone(),
        };
        if let Err(tie) = break_tie(rule, weights, tie, &mut held, &mut broken_ties) {
            return Apportionment {
                seats: held,
                tie: Some(tie),
                broken_ties,
            };
        }
        left = 0;
    }
    Apportionment {
        seats: held,
        tie: None,
        broken_ties,
    }
}

/// Unbounded largest remainder among `weights`; units with weight zero get nothing.
fn largest_remainder(weights: &[u64], seats: u32, quota: Quota, rule: TieRule) -> Apportionment {
    let mut held = vec![0u32; weights.len()];
    let mut broken_ties = Vec::new();
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    // With no weight there is nothing to divide by; the caller's bounds then decide.
    if seats == 0 || total == 0 {
        return Apportionment {
            seats: held,
            tie: None,
            broken_ties,
        };
    }
    let s = u128::from(seats);
    let mut remainders = Vec::with_capacity(weights.len());
    for (unit, &weight) in weights.iter().enumerate() {
        let w = u128::from(weight);
        // Hare: the quotient w / (total / seats) = w * seats / total as an exact fraction, whose
        // remainders all share the denominator total and so compare as integers.
        // Droop: q = floor(total / (seats + 1)) + 1 is an integer quota.
        let (whole, remainder) = match quota {
            Quota::Hare => (w * s / total, w * s % total),
            Quota::Droop => {
                let q = total / (s + 1) + 1;
                (w / q, w % q)
            }
        };
        // A unit's whole quotas are at most all the seats (see below), which fit in u32.
        held[unit] = u32::try_from(whole).expect("whole quotas never exceed the seats");
        remainders.push(remainder);
    }
    // The whole quotas never exceed the seats: under Hare they sum to at most
    // sum(w * seats / total) = seats; under Droop q > total / (seats + 1), so they sum to at most
    // total / q < seats + 1.
    let mut left = seats - held.iter().sum::<u32>();
    // total > 0, so some unit has weight and this is not empty.
    let mut eligible: Vec<usize> = (0..weights.len()).filter(|&u| weights[u] > 0).collect();
    // Under Hare fewer seats are left than units with a positive remainder. Under Droop a tiny
    // total (quota 1 or 2 with many seats) can leave more seats than units; then the seats go
    // round again in the same order rather than staying unassigned. MAX_UNITS fits in u32.
    let units = eligible.len() as u32;
    let rounds = left / units;
    if rounds > 0 {
        for &unit in &eligible {
            held[unit] += rounds;
        }
        left -= rounds * units;
    }
    if left > 0 {
        eligible.sort_by(|&a, &b| remainders[b].cmp(&remainders[a]).then(a.cmp(&b)));
        let cutoff = remainders[eligible[left as usize - 1]];
        let ahead = eligible
            .iter()
            .take_while(|&&u| remainders[u] > cutoff)
            .count();
        for &unit in &eligible[..ahead] {
            held[unit] += 1;
        }
        let contested = left - ahead as u32;
        // The sort put equal remainders in definition order, so tied is ascending.
        let tied: Vec<usize> = eligible[ahead..]
            .iter()
            .copied()
            .take_while(|&u| remainders[u] == cutoff)
            .collect();
        if tied.len() as u32 == contested {
            for &unit in &tied {
                held[unit] += 1;
            }
        } else {
            let tie = Tie {
                seats: contested,
                units: tied,
            };
            if let Err(tie) = break_tie(rule, weights, tie, &mut held, &mut broken_ties) {
                return Apportionment {
                    seats: held,
                    tie: Some(tie),
                    broken_ties,
                };
            }
        }
    }
    Apportionment {
        seats: held,
        tie: None,
        broken_ties,
    }
}

/// Largest remainder with bounds, by fixing violators and reapportioning the rest.
///
/// Invariant: the seats not yet fixed, `rest`, lie between the sum of the free units' minimums
/// and the sum of their maximums (true at the start, by validation). A round apportions `rest`
/// among the free units as `a`; let `deficit` be the seats the units below their minimum lack
/// and `excess` the seats the units above their maximum have too many.
/// - If `excess >= deficit`, the units above are fixed at their maximum. What is left for the
///   others is their share in `a` plus `excess`, which is at least their minimums because their
///   share fell short of them by at most `deficit`; and it is at most their maximums because
///   `rest` was at most all the maximums.
/// - Otherwise the units below are fixed at their minimum, symmetrically.
///
/// Each round fixes at least one unit, so this ends within one round per unit, and when every
/// unit is fixed the invariant forces `rest` to zero: the seats sum exactly.
fn bounded_largest_remainder(
    weights: &[u64],
    seats: u32,
    quota: Quota,
    ranges: &[Range],
    rule: TieRule,
) -> Apportionment {
    let mut fixed: Vec<Option<u32>> = vec![None; weights.len()];
    loop {
        let free: Vec<usize> = (0..weights.len()).filter(|&u| fixed[u].is_none()).collect();
        let rest = seats - fixed.iter().flatten().sum::<u32>();
        let free_weights: Vec<u64> = free.iter().map(|&u| weights[u]).collect();
        let round = largest_remainder(&free_weights, rest, quota, rule);

        // A reported tie leaves seats unassigned; to judge bounds, give them provisionally in
        // definition order so the round's seats sum to rest and the invariant argument holds.
        let mut provisional = round.seats.clone();
        if let Some(tie) = &round.tie {
            for &k in tie.units.iter().take(tie.seats as usize) {
                provisional[k] += 1;
            }
        }
        let (mut below, mut above) = (Vec::new(), Vec::new());
        let (mut deficit, mut excess) = (0u64, 0u64);
        for (k, &unit) in free.iter().enumerate() {
            let Range { min, max } = ranges[unit];
            if provisional[k] < min {
                deficit += u64::from(min - provisional[k]);
                below.push(unit);
            } else if provisional[k] > max {
                excess += u64::from(provisional[k] - max);
                above.push(unit);
            }
        }

        if below.is_empty() && above.is_empty() {
            // Stable: this round stands, with its tie (if any) in the caller's indices.
            let mut seats_out: Vec<u32> = fixed.iter().map(|f| f.unwrap_or(0)).collect();
            for (k, &unit) in free.iter().enumerate() {
                seats_out[unit] = round.seats[k];
            }
            let to_units = |tie: Tie| Tie {
                seats: tie.seats,
                units: tie.units.into_iter().map(|k| free[k]).collect(),
            };
            return Apportionment {
                seats: seats_out,
                tie: round.tie.map(to_units),
                broken_ties: round.broken_ties.into_iter().map(to_units).collect(),
            };
        }
        if excess >= deficit {
            for unit in above {
                fixed[unit] = Some(ranges[unit].max);
            }
        } else {
            for unit in below {
                fixed[unit] = Some(ranges[unit].min);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(weights: &[u64], seats: u32, method: Method, rule: TieRule) -> Apportionment {
        apportion(&Request {
            weights,
            seats,
            method,
            bounds: &[],
            tie_rule: rule,
        })
        .expect("valid request")
    }

    fn seats_of(weights: &[u64], seats: u32, method: Method) -> Vec<u32> {
        let outcome = run(weights, seats, method, TieRule::Report);
        assert_eq!(outcome.tie, None, "{method} on {weights:?}");
        outcome.seats
    }

    #[test]
    fn rulebook_example() {
        // Goal: the worked example of the rulebook, and the textbook contrast between
        // methods on it. Method: every method, 8 seats among four townships.
        let populations = [100_000, 80_000, 30_000, 20_000];
        let expected = [
            (Method::DHondt, [4, 3, 1, 0]),
            (Method::SainteLague, [3, 3, 1, 1]),
            (Method::LargestRemainderHare, [3, 3, 1, 1]),
            // Droop quota 25,556: whole quotas 3, 3, 1, 0 and the largest remainder is the
            // first township's 23,332.
            (Method::LargestRemainderDroop, [4, 3, 1, 0]),
            (Method::HuntingtonHill, [3, 3, 1, 1]),
            (Method::Adams, [3, 3, 1, 1]),
            (Method::Dean, [3, 3, 1, 1]),
        ];
        for (method, seats) in expected {
            assert_eq!(seats_of(&populations, 8, method), seats, "{method}");
        }
    }

    /// The 2020 US census table: state, apportionment population, seats.
    fn us_house_2020() -> Vec<(&'static str, u64, u32)> {
        include_str!("../testdata/apportion/us-house-2020.csv")
            .lines()
            .skip(1)
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let fields: Vec<&str> = line.split(',').collect();
                assert_eq!(fields.len(), 3, "bad row {line:?}");
                let population = fields[1].parse().expect("population is a number");
                let seats = fields[2].parse().expect("seats is a number");
                (fields[0], population, seats)
            })
            .collect()
    }

    #[test]
    fn us_house_2020_huntington_hill() {
        // Goal: reproduce the official 2020 apportionment of the US House, checking the data
        // first so a mistyped row shows up as such. Method: Huntington-Hill, 435 seats, at
        // least one per state.
        let table = us_house_2020();
        assert_eq!(table.len(), 50);
        assert_eq!(table.iter().map(|r| r.1).sum::<u64>(), 331_108_434);
        assert_eq!(table.iter().map(|r| r.2).sum::<u32>(), 435);
        let populations: Vec<u64> = table.iter().map(|r| r.1).collect();
        let bounds = vec![Bounds { min: 1, max: None }; 50];
        let request = Request {
            weights: &populations,
            seats: 435,
            method: Method::HuntingtonHill,
            bounds: &bounds,
            tie_rule: TieRule::Report,
        };
        let outcome = apportion(&request).expect("valid request");
        assert_eq!(outcome.tie, None);
        for (k, (state, _, seats)) in table.iter().enumerate() {
            assert_eq!(outcome.seats[k], *seats, "{state}");
        }
        // Huntington-Hill gives every state a first seat by itself.
        let unbounded = apportion(&Request {
            bounds: &[],
            ..request
        })
        .expect("valid request");
        assert_eq!(unbounded.seats, outcome.seats);

        // New York missed its 27th seat by 89 people: with them it takes Minnesota's 8th.
        let state = |name: &str| {
            table
                .iter()
                .position(|r| r.0 == name)
                .expect("state is in the table")
        };
        let (ny, mn) = (state("New York"), state("Minnesota"));
        for (extra, ny_seats, mn_seats) in [(88, 26, 8), (89, 27, 7)] {
            let mut populations = populations.clone();
            populations[ny] += extra;
            let seats = seats_of(&populations, 435, Method::HuntingtonHill);
            assert_eq!((seats[ny], seats[mn]), (ny_seats, mn_seats), "{extra} more");
        }
    }

    #[test]
    fn tie_for_one_seat() {
        // Goal: a tie for the last seat is reported or broken as the rule says, and recorded.
        // Method: D'Hondt and Hare, two equal townships, one seat.
        for method in [Method::DHondt, Method::LargestRemainderHare] {
            let reported = run(&[500, 500], 1, method, TieRule::Report);
            assert_eq!(reported.seats, [0, 0]);
            let tie = Tie {
                seats: 1,
                units: vec![0, 1],
            };
            assert_eq!(reported.tie, Some(tie.clone()));
            assert!(reported.broken_ties.is_empty());

            let broken = run(&[500, 500], 1, method, TieRule::DefinitionOrder);
            assert_eq!(broken.seats, [1, 0]);
            assert_eq!(broken.tie, None);
            assert_eq!(broken.broken_ties, vec![tie.clone()]);

            let by_weight = run(&[500, 500], 1, method, TieRule::LargerWeightFirst);
            assert_eq!(by_weight.seats, [1, 0], "equal weights fall back to order");
            assert_eq!(by_weight.broken_ties, [tie]);
        }
    }

    #[test]
    fn larger_weight_first() {
        // Goal: LargerWeightFirst prefers larger weights, then definition order, including
        // among infinite priorities. Method: Adams and D'Hondt.
        // Adams: all three claim a first seat with infinite priority, two seats.
        let reported = run(&[3, 5, 5], 2, Method::Adams, TieRule::Report);
        assert_eq!(reported.seats, [0, 0, 0]);
        let tie = Tie {
            seats: 2,
            units: vec![0, 1, 2],
        };
        assert_eq!(reported.tie, Some(tie.clone()));
        let by_weight = run(&[3, 5, 5], 2, Method::Adams, TieRule::LargerWeightFirst);
        assert_eq!(by_weight.seats, [0, 1, 1]);
        assert_eq!(by_weight.broken_ties, vec![tie.clone()]);
        let by_order = run(&[3, 5, 5], 2, Method::Adams, TieRule::DefinitionOrder);
        assert_eq!(by_order.seats, [1, 1, 0]);
        assert_eq!(by_order.broken_ties, [tie]);

        // D'Hondt: 6/2 equals 3/1 for the third seat; the larger list wins it.
        let reported = run(&[6, 3], 2, Method::DHondt, TieRule::Report);
        assert_eq!(reported.seats, [1, 0]);
        assert_eq!(
            reported.tie,
            Some(Tie {
                seats: 1,
                units: vec![0, 1]
            })
        );
        let by_weight = run(&[3, 6], 2, Method::DHondt, TieRule::LargerWeightFirst);
        assert_eq!(by_weight.seats, [0, 2]);
    }

    #[test]
    fn tie_that_changes_nothing_is_no_tie() {
        // Goal: units tied for seats they all get are not a tie. Method: every method, two
        // equal townships and two or four seats.
        for method in Method::ALL {
            for seats in [2, 4] {
                let outcome = run(&[700, 700], seats, method, TieRule::Report);
                assert_eq!(outcome.seats, [seats / 2, seats / 2], "{method}");
                assert_eq!(outcome.tie, None, "{method}");
                assert!(outcome.broken_ties.is_empty(), "{method}");
            }
        }
    }

    #[test]
    fn zero_seats_and_zero_weights() {
        // Goal: zero seats give zeros, and a unit without weight gets no seat. Method: every
        // method.
        for method in Method::ALL {
            assert_eq!(seats_of(&[10, 0, 3], 0, method), [0, 0, 0], "{method}");
            assert_eq!(seats_of(&[], 0, method), Vec::<u32>::new(), "{method}");
            let seats = seats_of(&[10, 0, 3], 5, method);
            assert_eq!(seats[1], 0, "{method}");
            assert_eq!(seats.iter().sum::<u32>(), 5, "{method}");
        }
    }

    #[test]
    fn droop_with_tiny_total() {
        // Goal: a quota of 1 leaves more seats than units; they go round again rather than
        // staying unassigned. Method: largest remainder, Droop quota.
        assert_eq!(seats_of(&[1, 2], 11, Method::LargestRemainderDroop), [5, 6]);
        assert_eq!(seats_of(&[1], 200, Method::LargestRemainderDroop), [200]);
    }

    #[test]
    fn bounds_are_respected() {
        // Goal: minimums and maximums hold and the seats still sum exactly, for every method.
        // Method: every method, a dominant township capped and small ones with a floor.
        let weights = [900_000, 50_000, 30_000, 20_000];
        let bounds = [
            Bounds {
                min: 0,
                max: Some(6),
            },
            Bounds { min: 1, max: None },
            Bounds { min: 1, max: None },
            Bounds { min: 1, max: None },
        ];
        for method in Method::ALL {
            let outcome = apportion(&Request {
                weights: &weights,
                seats: 10,
                method,
                bounds: &bounds,
                tie_rule: TieRule::DefinitionOrder,
            })
            .expect("feasible bounds");
            assert_eq!(outcome.seats.iter().sum::<u32>(), 10, "{method}");
            assert_eq!(outcome.seats[0], 6, "{method}");
            for (seats, b) in outcome.seats.iter().zip(&bounds) {
                assert!(
                    *seats >= b.min && b.max.is_none_or(|m| *seats <= m),
                    "{method}"
                );
            }
        }
        // The case where fixing both sides at once would strand seats: the big unit is capped
        // at 3, the small one needs 2 and must take the other 7.
        for method in Method::ALL {
            let outcome = apportion(&Request {
                weights: &[1, 100],
                seats: 10,
                method,
                bounds: &[
                    Bounds {
                        min: 2,
                        max: Some(10),
                    },
                    Bounds {
                        min: 0,
                        max: Some(3),
                    },
                ],
                tie_rule: TieRule::Report,
            })
            .expect("feasible bounds");
            assert_eq!(outcome.seats, [7, 3], "{method}");
        }
    }

    #[test]
    fn impossible_bounds_are_errors() {
        // Goal: each infeasible request is rejected with the numbers. Method: D'Hondt.
        let request = |weights: &'static [u64], seats, bounds: &'static [Bounds]| {
            apportion(&Request {
                weights,
                seats,
                method: Method::DHondt,
                bounds,
                tie_rule: TieRule::Report,
            })
        };
        const MIN_3: Bounds = Bounds { min: 3, max: None };
        const MAX_1: Bounds = Bounds {
            min: 0,
            max: Some(1),
        };
        assert_eq!(
            request(&[1, 2], 5, &[MIN_3, MIN_3]),
            Err(Error::MinimaExceedSeats {
                minima: 6,
                seats: 5
            })
        );
        assert_eq!(
            request(&[1, 2], 5, &[MAX_1, MAX_1]),
            Err(Error::MaximaBelowSeats {
                maxima: 2,
                seats: 5
            })
        );
        // A unit without weight counts at its minimum.
        assert_eq!(
            request(&[1, 0], 5, &[MAX_1, Bounds { min: 0, max: None }]),
            Err(Error::MaximaBelowSeats {
                maxima: 1,
                seats: 5
            })
        );
        assert_eq!(
            request(
                &[1, 2],
                5,
                &[
                    Bounds {
                        min: 2,
                        max: Some(1)
                    },
                    MIN_3
                ]
            ),
            Err(Error::MinAboveMax {
                unit: 0,
                min: 2,
                max: 1
            })
        );
        assert_eq!(
            request(&[1, 2], 5, &[MIN_3]),
            Err(Error::BoundsLength {
                bounds: 1,
                units: 2
            })
        );
        assert_eq!(
            request(&[0, 0], 5, &[]),
            Err(Error::AllWeightsZero {
                seats: 5,
                minima: 0
            })
        );
        assert_eq!(request(&[], 5, &[]), Err(Error::NoUnits { seats: 5 }));
        assert_eq!(
            request(&[1, MAX_WEIGHT + 1], 5, &[]),
            Err(Error::WeightTooLarge {
                unit: 1,
                weight: MAX_WEIGHT + 1
            })
        );
        assert_eq!(
            request(&[1], MAX_SEATS + 1, &[]),
            Err(Error::TooManySeats {
                seats: MAX_SEATS + 1
            })
        );
        // Weights at the limit stay exact, and the largest products (Huntington-Hill's, with
        // the most seats) do not overflow.
        assert_eq!(
            request(&[MAX_WEIGHT, MAX_WEIGHT - 1], 3, &[]).map(|a| a.seats),
            Ok(vec![2, 1])
        );
        let heaviest = [MAX_WEIGHT, MAX_WEIGHT - 1];
        for method in Method::ALL {
            assert_eq!(
                seats_of(&heaviest, MAX_SEATS, method),
                [50_000, 50_000],
                "{method}"
            );
        }
        assert_eq!(
            Error::MinimaExceedSeats {
                minima: 6,
                seats: 5
            }
            .to_string(),
            "minimum seats sum to 6, more than the 5 seats to apportion"
        );
    }

    #[test]
    fn lists_with_threshold() {
        // Goal: a list under the threshold gets nothing and the threshold is a share of all
        // valid votes. Method: D'Hondt and Sainte-Laguë among four lists, 5% threshold.
        let votes = [48_000, 30_000, 18_000, 4_000];
        let five_percent = Threshold {
            numerator: 5,
            denominator: 100,
        };
        let dhondt = allocate_lists(
            &votes,
            10,
            Method::DHondt,
            Some(five_percent),
            TieRule::Report,
        )
        .expect("valid");
        assert_eq!(dhondt.seats, [5, 3, 2, 0]);
        let without =
            allocate_lists(&votes, 10, Method::SainteLague, None, TieRule::Report).expect("valid");
        assert_eq!(without.seats, [5, 3, 2, 0]);
        let with =
            allocate_lists(&votes, 20, Method::SainteLague, None, TieRule::Report).expect("valid");
        assert_eq!(
            with.seats[3], 1,
            "without a threshold the small list wins a seat"
        );
        let with = allocate_lists(
            &votes,
            20,
            Method::SainteLague,
            Some(five_percent),
            TieRule::Report,
        )
        .expect("valid");
        assert_eq!(with.seats[3], 0);
        assert_eq!(with.seats.iter().sum::<u32>(), 20);
        // Exactly at the threshold is not under it.
        let at = allocate_lists(
            &[95, 5],
            20,
            Method::LargestRemainderHare,
            Some(five_percent),
            TieRule::Report,
        )
        .expect("valid");
        assert_eq!(at.seats, [19, 1]);
        assert_eq!(
            allocate_lists(
                &votes,
                10,
                Method::DHondt,
                Some(Threshold {
                    numerator: 1,
                    denominator: 0
                }),
                TieRule::Report
            ),
            Err(Error::InvalidThreshold {
                numerator: 1,
                denominator: 0
            })
        );
        assert_eq!(
            allocate_lists(
                &[1, 1, 1],
                3,
                Method::DHondt,
                Some(Threshold {
                    numerator: 1,
                    denominator: 2
                }),
                TieRule::Report
            ),
            Err(Error::NoListReachesThreshold {
                numerator: 1,
                denominator: 2,
                seats: 3
            })
        );
    }

    #[test]
    fn method_names() {
        // Goal: name, FromStr and serde agree on the kebab-case names. Method: all.
        for method in Method::ALL {
            assert_eq!(method.name().parse::<Method>(), Ok(method));
            let json = serde_json::to_string(&method).expect("serializable");
            assert_eq!(json, format!("\"{}\"", method.name()));
        }
        let err = "dhondt".parse::<Method>().expect_err("not a method name");
        assert!(err.to_string().contains("d-hondt, sainte-lague"), "{err}");
        assert_eq!(
            serde_json::to_string(&TieRule::LargerWeightFirst).expect("serializable"),
            "\"larger-weight-first\""
        );
    }

    /// Random weights with at least one positive, and a seat count.
    fn weights_strategy() -> impl Strategy<Value = Vec<u64>> {
        prop::collection::vec(
            prop_oneof![Just(0u64), 1u64..=100, 0u64..=10_000_000],
            1..=20,
        )
        .prop_filter("some weight is positive", |w| w.iter().any(|&x| x > 0))
    }

    const DIVISORS: [(Method, Divisor); 5] = [
        (Method::DHondt, Divisor::DHondt),
        (Method::SainteLague, Divisor::SainteLague),
        (Method::HuntingtonHill, Divisor::HuntingtonHill),
        (Method::Adams, Divisor::Adams),
        (Method::Dean, Divisor::Dean),
    ];

    proptest! {
        #[test]
        fn seats_sum_and_bounds_hold(
            weights in weights_strategy(),
            seats in 0u32..=200,
            raw_bounds in prop::collection::vec((0u32..=3, prop::option::of(0u32..=15)), 20),
        ) {
            // Goal: with feasible bounds every seat is given (or reported as tied) and every
            // unit stays within its bounds. Method: every method, both tie rules.
            let bounds: Vec<Bounds> = weights
                .iter()
                .zip(&raw_bounds)
                .map(|(_, &(min, extra))| Bounds { min, max: extra.map(|e| min + e) })
                .collect();
            let minima: u32 = bounds.iter().map(|b| b.min).sum();
            let maxima: u32 = bounds
                .iter()
                .zip(&weights)
                .map(|(b, &w)| if w == 0 { b.min } else { b.max.unwrap_or(u32::MAX / 64) })
                .sum();
            let seats = seats.clamp(minima, maxima);
            for method in Method::ALL {
                let request = Request {
                    weights: &weights,
                    seats,
                    method,
                    bounds: &bounds,
                    tie_rule: TieRule::DefinitionOrder,
                };
                let broken = apportion(&request).expect("feasible bounds");
                prop_assert_eq!(broken.tie, None);
                prop_assert_eq!(broken.seats.iter().sum::<u32>(), seats, "{}", method);
                for ((&s, b), &w) in broken.seats.iter().zip(&bounds).zip(&weights) {
                    prop_assert!(s >= b.min && b.max.is_none_or(|m| s <= m), "{}", method);
                    prop_assert!(w > 0 || s == b.min, "{}", method);
                }
                let reported = apportion(&Request { tie_rule: TieRule::Report, ..request })
                    .expect("feasible bounds");
                let contested = reported.tie.as_ref().map_or(0, |t| t.seats);
                prop_assert_eq!(reported.seats.iter().sum::<u32>() + contested, seats);
                if let Some(tie) = &reported.tie {
                    prop_assert!((tie.units.len() as u32) > tie.seats);
                }
            }
        }

        #[test]
        fn divisor_methods_are_house_monotone_and_meet_their_criterion(
            weights in weights_strategy(),
            seats in 0u32..=200,
        ) {
            // Goal: adding a seat never costs a unit a seat, and the seats satisfy the divisor
            // criterion min over held seats of w/d(s-1) >= max over units of w/d(s).
            // Method: the five divisor methods, unbounded.
            for (method, divisor) in DIVISORS {
                let now = run(&weights, seats, method, TieRule::Report);
                let next = run(&weights, seats + 1, method, TieRule::Report);
                if now.tie.is_none() && next.tie.is_none() {
                    for (a, b) in now.seats.iter().zip(&next.seats) {
                        prop_assert!(b >= a, "{}", method);
                    }
                }
                if now.tie.is_some() {
                    continue;
                }
                let positive = || (0..weights.len()).filter(|&u| weights[u] > 0);
                let weakest_held = positive()
                    .filter(|&u| now.seats[u] > 0)
                    .map(|u| priority(divisor, weights[u], now.seats[u] - 1))
                    .min_by(|a, b| a.compare(*b));
                let strongest_next = positive()
                    .map(|u| priority(divisor, weights[u], now.seats[u]))
                    .max_by(|a, b| a.compare(*b));
                if let (Some(held), Some(next)) = (weakest_held, strongest_next) {
                    prop_assert!(held.compare(next) != Ordering::Less, "{}", method);
                }
            }
        }

        #[test]
        fn hare_stays_within_quota_and_reports_agree(
            weights in weights_strategy(),
            seats in 0u32..=200,
        ) {
            // Goal: each unit gets its exact Hare quota rounded down or up, and a reported tie
            // differs from a broken one only in the contested seats. Method: largest
            // remainder, Hare quota.
            let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
            let hare = Method::LargestRemainderHare;
            let broken = run(&weights, seats, hare, TieRule::DefinitionOrder);
            for (&s, &w) in broken.seats.iter().zip(&weights) {
                let floor = u128::from(w) * u128::from(seats) / total;
                prop_assert!(u128::from(s) == floor || u128::from(s) == floor + 1);
            }
            let reported = run(&weights, seats, hare, TieRule::Report);
            for (u, (&r, &b)) in reported.seats.iter().zip(&broken.seats).enumerate() {
                let tied = reported.tie.as_ref().is_some_and(|t| t.units.contains(&u));
                prop_assert!(r == b || (tied && r + 1 == b));
            }
        }
    }
}
