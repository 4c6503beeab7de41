//! What a township aggregator takes from its callers, method by method: who may call, the
//! largest message, and how many calls one caller and all callers may have in progress; and
//! how many connections and streams it holds open. [`tally_net::limits`] enforces the table
//! before a request body is read; [`crate::server::router`] wraps every service in it.
//!
//! The roles are those the handlers allow; the handlers keep their finer checks (a polling
//! unit submits only to its own township, only its own sheets).

use crate::township::SUBMIT_SHEETS_MAX;
use std::sync::Arc;
use tally_core::ids::TownshipId;

/// The largest Submit or Import request: 64 envelopes of at most 64 KiB, with room.
pub const SUBMIT_BYTES_MAX: usize = (SUBMIT_SHEETS_MAX + 1) * tally_proto::SIGNED_SHEET_BYTES_MAX;
use tally_net::{MethodLimit, Role, ServiceLimits};

/// Connections an aggregator holds open at once; the next waits in the listen backlog until
/// one closes (as mini-redis's `MAX_CONNECTIONS`). A township has tens of polling units and a
/// few clerks.
pub const CONNECTIONS_MAX: usize = 1024;
/// Concurrent streams (calls) on one HTTP/2 connection: a unit device sends one Submit at a
/// time, a clerk's tools a few calls.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 64;
/// Submit calls one polling unit may have in progress. `tally village` sends one at a time
/// (its pending sheets first, then the new one); a few more allow a resend while an abandoned
/// call is still being answered.
pub const SUBMITS_IN_FLIGHT_PER_UNIT: usize = 4;
/// Submit calls all units together may have in progress: the writer's queue
/// (`SUBMITS_QUEUED_MAX`), so a call taken is a call the writer has room for.
pub const SUBMITS_IN_FLIGHT_MAX: usize = crate::township::SUBMITS_QUEUED_MAX;
/// Import calls one clerk (a township or operator certificate) may have in progress.
pub const IMPORTS_IN_FLIGHT_PER_CALLER: usize = 4;
/// Import calls all callers together may have in progress.
pub const IMPORTS_IN_FLIGHT_MAX: usize = 16;
/// The largest Picture request: it carries no fields.
pub const PICTURE_REQUEST_BYTES_MAX: usize = 4 << 10;
/// Picture calls one clerk may have in progress (each computes the provisional results).
pub const PICTURES_IN_FLIGHT_PER_CALLER: usize = 8;
/// Picture calls all callers together may have in progress.
pub const PICTURES_IN_FLIGHT_MAX: usize = 64;

const SUBMIT_ROLES: &[Role] = &[Role::Village];
const CLERK_ROLES: &[Role] = &[Role::Township, Role::Operator];

/// The name refusals give the aggregator of `township`.
pub fn server_name(township: &TownshipId) -> String {
    format!("township {township}'s aggregator")
}

/// `tally.v1.Township` on the aggregator of `township`.
pub fn township(township: &TownshipId) -> Arc<ServiceLimits> {
    Arc::new(ServiceLimits::new(
        "tally.v1.Township",
        server_name(township),
        vec![
            // The largest Submit: `SUBMIT_SHEETS_MAX` envelopes of the largest signed sheet.
            MethodLimit {
                method: "Submit",
                roles: SUBMIT_ROLES,
                message_bytes_max: SUBMIT_BYTES_MAX,
                in_flight_per_caller: SUBMITS_IN_FLIGHT_PER_UNIT,
                in_flight_max: SUBMITS_IN_FLIGHT_MAX,
            },
            // An Import is a Submit request with a file name.
            MethodLimit {
                method: "Import",
                roles: CLERK_ROLES,
                message_bytes_max: SUBMIT_BYTES_MAX,
                in_flight_per_caller: IMPORTS_IN_FLIGHT_PER_CALLER,
                in_flight_max: IMPORTS_IN_FLIGHT_MAX,
            },
            MethodLimit {
                method: "Picture",
                roles: CLERK_ROLES,
                message_bytes_max: PICTURE_REQUEST_BYTES_MAX,
                in_flight_per_caller: PICTURES_IN_FLIGHT_PER_CALLER,
                in_flight_max: PICTURES_IN_FLIGHT_MAX,
            },
        ],
    ))
}
