//! `Township` (`proto/tally/v1/township.proto`) over the aggregator's core.
//!
//! Every handler first establishes who is calling from the certificate the TLS handshake
//! verified ([`tally_net::peer_identity`]) and what that role may do here:
//!
//! | call    | village                                | township            | operator |
//! |---------|----------------------------------------|---------------------|----------|
//! | Submit  | a unit of this township, its own sheets | no                  | no       |
//! | Import  | no                                     | this township only  | yes      |
//! | Picture | no                                     | this township only  | yes      |

use crate::township::Township;
use std::sync::Arc;
use tally_core::ids::UnitId;
use tally_net::{Identity, Role, peer_identity, require};
use tally_rpc::pb;
use tonic::{Request, Response, Status};

/// The longest `source` an Import may give (a file name), in bytes.
pub const SOURCE_LEN_MAX: usize = 256;

pub struct TownshipService {
    pub township: Arc<Township>,
}

impl TownshipService {
    /// The polling unit a village certificate speaks for, if it is one of this township's.
    fn village_unit(&self, caller: &Identity) -> Result<UnitId, Status> {
        let unit = UnitId::new(caller.name());
        let here = &self.township.township;
        match self.township.definition().unit(&unit) {
            None => Err(Status::permission_denied(format!(
                "certificate {caller} names no polling unit of the election definition; a polling unit's certificate carries its unit id (tally certs --villages)"
            ))),
            Some(u) if u.township != *here => Err(Status::permission_denied(format!(
                "certificate {caller} is polling unit {unit} of township {}, not of township {here}; a unit submits to its own township's aggregator (township {})",
                u.township, u.township
            ))),
            Some(_) => Ok(unit),
        }
    }

    /// A township certificate may act only for its own township.
    fn own_township(&self, caller: &Identity, call: &str) -> Result<(), Status> {
        let here = &self.township.township;
        if caller.role() == Role::Township && caller.name() != here.as_str() {
            return Err(Status::permission_denied(format!(
                "certificate {caller} is township {}'s; it may {call} only at its own aggregator, not at township {here}'s",
                caller.name()
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::township_server::Township for TownshipService {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let caller = peer_identity(&request)?;
        require(&caller, &[Role::Village])?;
        let unit = self.village_unit(&caller)?;
        let source = format!("submit by {caller}");
        let outcomes = self
            .township
            .take(request.into_inner().sheets, Some(unit), source)
            .await?;
        Ok(Response::new(pb::SubmitResponse { outcomes }))
    }

    async fn import(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let caller = peer_identity(&request)?;
        require(&caller, &[Role::Township, Role::Operator])?;
        self.own_township(&caller, "import sheets")?;
        let request = request.into_inner();
        if request.source.len() > SOURCE_LEN_MAX {
            return Err(Status::invalid_argument(format!(
                "source is {} bytes, more than {SOURCE_LEN_MAX}; give the file name only",
                request.source.len()
            )));
        }
        let source = if request.source.is_empty() {
            format!("import by {caller}")
        } else {
            format!("import by {caller} from {}", request.source)
        };
        let outcomes = self.township.take(request.sheets, None, source).await?;
        Ok(Response::new(pb::SubmitResponse { outcomes }))
    }

    async fn picture(
        &self,
        request: Request<pb::PictureRequest>,
    ) -> Result<Response<pb::PictureResponse>, Status> {
        let caller = peer_identity(&request)?;
        require(&caller, &[Role::Township, Role::Operator])?;
        self.own_township(&caller, "read the picture")?;
        let township = self.township.clone();
        // Computing the provisional results takes a few milliseconds; off the async threads.
        let picture = tokio::task::spawn_blocking(move || township.picture())
            .await
            .map_err(|e| Status::unavailable(format!("the picture was not computed: {e}")))?;
        Ok(Response::new(picture))
    }
}
