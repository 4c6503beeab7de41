//! The total number of seats of a congress, from the population of its area (Election Law
//! Art 12). The total is fixed before the election and does not change during it (Art 14).

use serde::{Deserialize, Serialize};

/// Which revision of the Election Law the definition follows. Only the bases differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum LawRevision {
    /// The 2015 revision: county base 120, township base 40.
    #[serde(rename = "2015")]
    Rev2015,
    /// The 2020 revision, in force since 2020-10-18: county base 140, township base 45.
    #[serde(rename = "2020")]
    #[default]
    Rev2020,
}

/// How "one more seat per 5,000 people" (每五千人可以增加一名) is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SeatRounding {
    /// One seat per *full* 5,000 (1,500) people: the software's default reading.
    #[default]
    Floor,
    /// A part of 5,000 (1,500) of at least half counts as a full one.
    HalfUp,
}

/// The congress level a seat total is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// The county people's congress (县级人大).
    County,
    /// A township's congress (乡级人大).
    Township,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::County => "county",
            Level::Township => "township",
        }
    }
    pub fn chinese(self) -> &'static str {
        match self {
            Level::County => "县级",
            Level::Township => "乡级",
        }
    }
}

/// The constants of Art 12 for one level.
struct Scale {
    base: u64,
    people_per_seat: u64,
    cap: u64,
    /// Under this population the law lets the total fall below the base; the definition must
    /// then state the total itself.
    small_area_population: u64,
}

fn scale(level: Level, revision: LawRevision) -> Scale {
    match (level, revision) {
        (Level::County, LawRevision::Rev2020) => Scale {
            base: 140,
            people_per_seat: 5_000,
            cap: 450,
            small_area_population: 50_000,
        },
        (Level::County, LawRevision::Rev2015) => Scale {
            base: 120,
            people_per_seat: 5_000,
            cap: 450,
            small_area_population: 50_000,
        },
        (Level::Township, LawRevision::Rev2020) => Scale {
            base: 45,
            people_per_seat: 1_500,
            cap: 160,
            small_area_population: 2_000,
        },
        (Level::Township, LawRevision::Rev2015) => Scale {
            base: 40,
            people_per_seat: 1_500,
            cap: 160,
            small_area_population: 2_000,
        },
    }
}

/// What Art 12 gives for an area, with the working shown so a report can explain it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CongressSeats {
    pub base: u64,
    pub added_for_population: u64,
    /// The extra seats (up to 5%) a province granted, stated in the definition.
    pub extra: u64,
    /// The cap of Art 12 was applied.
    pub capped: bool,
    pub total: u64,
}

/// Returns the Art 12 total, or `None` for a small area (county under 50,000, township under
/// 2,000 people), where the law lets the total fall below the base and the definition must
/// state it.
pub fn congress_seats(
    level: Level,
    population: u64,
    revision: LawRevision,
    rounding: SeatRounding,
    extra: u64,
) -> Option<CongressSeats> {
    let scale = scale(level, revision);
    if population < scale.small_area_population {
        return None;
    }
    let added_for_population = match rounding {
        SeatRounding::Floor => population / scale.people_per_seat,
        SeatRounding::HalfUp => (population + scale.people_per_seat / 2) / scale.people_per_seat,
    };
    let uncapped = scale.base + added_for_population;
    let capped = uncapped > scale.cap;
    let total = uncapped.min(scale.cap) + extra;
    Some(CongressSeats {
        base: scale.base,
        added_for_population,
        extra,
        capped,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(level: Level, population: u64, revision: LawRevision) -> u64 {
        congress_seats(level, population, revision, SeatRounding::Floor, 0)
            .expect("large enough area")
            .total
    }

    // Goal: every worked example of the rulebook's Seats table holds.
    // Method: compute each row under the 2020 law with the default (floor) rounding.
    #[test]
    fn rulebook_worked_examples() {
        assert_eq!(total(Level::County, 823_400, LawRevision::Rev2020), 304);
        assert_eq!(total(Level::County, 1_800_000, LawRevision::Rev2020), 450);
        assert_eq!(total(Level::Township, 38_700, LawRevision::Rev2020), 70);
        assert_eq!(total(Level::Township, 250_000, LawRevision::Rev2020), 160);
        let capped = congress_seats(
            Level::County,
            1_800_000,
            LawRevision::Rev2020,
            SeatRounding::Floor,
            0,
        )
        .unwrap();
        assert!(capped.capped);
        assert_eq!(capped.added_for_population, 360);
    }

    // Goal: the 2015 bases apply when the definition names that revision; the county cap is
    // reached at 1.65M people as the rulebook says.
    // Method: compare both sides of the cap.
    #[test]
    fn revision_2015_bases() {
        assert_eq!(total(Level::County, 823_400, LawRevision::Rev2015), 284);
        assert_eq!(total(Level::Township, 38_700, LawRevision::Rev2015), 65);
        assert_eq!(total(Level::County, 1_650_000, LawRevision::Rev2015), 450);
        assert_eq!(total(Level::County, 1_645_000, LawRevision::Rev2015), 449);
    }

    // Goal: small areas are left to the definition, extra seats are added after the cap, and
    // half-up rounding counts a half part.
    #[test]
    fn small_areas_extra_and_rounding() {
        assert!(
            congress_seats(
                Level::County,
                49_999,
                LawRevision::Rev2020,
                SeatRounding::Floor,
                0
            )
            .is_none()
        );
        assert!(
            congress_seats(
                Level::Township,
                1_999,
                LawRevision::Rev2020,
                SeatRounding::Floor,
                0
            )
            .is_none()
        );
        let with_extra = congress_seats(
            Level::County,
            1_800_000,
            LawRevision::Rev2020,
            SeatRounding::Floor,
            20,
        )
        .unwrap();
        assert_eq!(with_extra.total, 470);
        let half_up = congress_seats(
            Level::Township,
            38_700,
            LawRevision::Rev2020,
            SeatRounding::HalfUp,
            0,
        )
        .unwrap();
        assert_eq!(half_up.total, 71); // 38,700 / 1,500 = 25.8 → 26
    }
}
