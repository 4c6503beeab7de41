//! The township learns the county's amendments (docs/design/record.md): it asks the county for
//! the committee acts recorded after the last one it applied (County.Acts), checks each one's
//! signatures against its own definition's committee, and applies it to the definition its
//! intake checks sheets under, in record order. So a unit whose key the committee replaced,
//! or a mobile ballot box added on the day, is taken here as the county takes it.
//!
//! The county stays the authority: an act the township cannot apply (its definition is not
//! the county's, E213 says so too) is logged and shown as the last error, and nothing here
//! changes; sheets the county would refuse are refused there.

use crate::forward::{CountyRoute, channel};
use crate::township::{Township, held};
use std::sync::Arc;
use std::time::Duration;
use tally_core::act::ActBody;
use tally_rpc::pb;
use tally_rpc::pb::county_client::CountyClient;
use tokio::sync::watch;

/// How often the township asks the county for new acts.
pub const ACTS_POLL: Duration = Duration::from_secs(3);

/// Asks for and applies the county's acts every [`ACTS_POLL`] until `stop` turns true.
pub(crate) async fn learn(
    township: Arc<Township>,
    route: CountyRoute,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = 0usize;
    loop {
        if *stop.borrow() {
            return;
        }
        for _ in 0..route.addresses.len() {
            let address = &route.addresses[next % route.addresses.len()];
            match ask(&township, &route, address).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::debug!(township = %township.township, replica = %address, %error, "could not ask the county for its acts");
                    next += 1;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(ACTS_POLL) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One question to one replica; applies what it answers, in order.
async fn ask(township: &Township, route: &CountyRoute, address: &str) -> Result<(), String> {
    let after = *held(&township.acts_after);
    let mut client = CountyClient::new(channel(&route.tls, address)?);
    let answer = client
        .acts(pb::ActsRequest {
            after_log_index: after,
        })
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    for record in answer.records {
        let log_index = record.log_index;
        if log_index <= *held(&township.acts_after) {
            continue;
        }
        let Some(act) = record.act else { continue };
        apply(township, act, log_index);
        *held(&township.acts_after) = log_index;
    }
    Ok(())
}

/// Checks and applies one act the county recorded at `log_index`.
fn apply(township: &Township, act: pb::CommitteeAct, log_index: u64) {
    let definition = township.definition();
    let applied = tally_proto::county::act_from_pb(act)
        .map_err(|e| e.to_string())
        .and_then(|act| tally_core::act::check(&definition, &act).map_err(|e| e.to_string()))
        .and_then(|(body, _)| match body {
            // Whether polling had begun was the county's to decide when it recorded it.
            ActBody::Amendment(amendment) => {
                tally_core::act::amend(&definition, &amendment, log_index, &|_| false)
                    .map(|d| (amendment.id, Arc::new(d)))
                    .map_err(|e| e.to_string())
            }
            // The zero report and the committee's decisions change no definition: the zero
            // report opens the count, the decisions are the county's to apply to its results.
            other @ (ActBody::ZeroReport(_)
            | ActBody::Decision(_)
            | ActBody::Confirmation(_)
            | ActBody::Reopening(_)) => Ok((other.label(), definition.clone())),
        });
    match applied {
        Ok((id, amended)) => {
            tracing::info!(township = %township.township, act = %id, log_index, "applied the county's act");
            township.amend(amended);
        }
        Err(error) => {
            tracing::error!(township = %township.township, log_index, %error, "cannot apply the county's act; its definition may not be this township's (E213)");
            crate::book::lock(&township.book).last_error =
                format!("cannot apply the county's act at log index {log_index}: {error}");
        }
    }
}
