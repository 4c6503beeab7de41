//! Authorization by the role in the peer's certificate, and the one place where certificate
//! failures become `tonic::Status`.
//!
//! A handler either checks for itself:
//!
//! ```
//! use tally_net::{Role, peer_identity, require};
//!
//! fn submit<T>(request: &tonic::Request<T>) -> Result<(), tonic::Status> {
//!     let caller = peer_identity(request)?;
//!     require(&caller, &[Role::Township])?;
//!     // The caller is a township; its id is caller.name().
//!     Ok(())
//! }
//! ```
//!
//! or a whole service is wrapped in [`RequireRole`], which refuses other roles before any
//! handler runs and leaves the caller's identity in the request for
//! [`authorized_identity`].
//!
//! tally's own servers wrap each service in [`crate::limits::guard`] instead, which decides per
//! method (roles, largest message, calls in flight) from the request's headers, before the
//! body is read, and also leaves the identity in the request's extensions.
//!
//! `peer_identity` reads the certificate that tonic's own TLS acceptor saw, which tonic files
//! under `TlsConnectInfo<TcpConnectInfo>`. A server fed by `serve_with_incoming` on another
//! kind of stream (a simulated network) keeps this working only if its `Connected` impl
//! reports `TcpConnectInfo`; otherwise every request is unauthenticated.

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::{Identity, Role, identity_of};

/// The verified identity of the peer that sent `request`: the tally identity in the leaf of
/// the certificate chain it presented during the TLS handshake.
///
/// `Unauthenticated` when there is no certificate (the server is not running mutual TLS) or
/// the certificate carries no tally identity.
pub fn peer_identity<T>(request: &Request<T>) -> Result<Identity, Status> {
    identity_in(request.extensions())
}

/// [`peer_identity`] from a request's extensions, where tonic's TLS acceptor files the peer's
/// certificate chain: what [`crate::limits`] reads from an HTTP request before its body.
pub fn identity_in(extensions: &tonic::Extensions) -> Result<Identity, Status> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let chain = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
        .ok_or_else(|| {
            Status::unauthenticated(
                "no client certificate: this service requires mutual TLS with a certificate from \
             the county CA (`tally certs` makes them)",
            )
        })?;
    let leaf = chain.first().ok_or_else(|| {
        Status::unauthenticated("the client presented an empty certificate chain")
    })?;
    identity_of(leaf).map_err(|e| Status::unauthenticated(e.to_string()))
}

/// Allows `identity` if its role is one of `allowed`; otherwise `PermissionDenied` naming the
/// caller, the roles this call needs, and what the caller's role may do instead.
pub fn require(identity: &Identity, allowed: &[Role]) -> Result<(), Status> {
    if allowed.contains(&identity.role()) {
        return Ok(());
    }
    let needed = match allowed {
        [] => "no certificate may make this call".to_string(),
        _ => {
            let names: Vec<&str> = allowed.iter().map(|role| role.as_str()).collect();
            format!(
                "this call needs {} {} certificate",
                article(names[0]),
                names.join(" or ")
            )
        }
    };
    Err(Status::permission_denied(format!(
        "{identity} may not make this call: {needed}; {a} {role} certificate may {may}",
        a = article(identity.role().as_str()),
        role = identity.role(),
        may = identity.role().may(),
    )))
}

/// The indefinite article before `word`: "an operator", "a replica".
fn article(word: &str) -> &'static str {
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

/// The identity [`RequireRole`] authorized for this request, if the service is wrapped in
/// one.
pub fn authorized_identity<T>(request: &Request<T>) -> Option<&Identity> {
    request.extensions().get::<Identity>()
}

/// A tonic interceptor that lets through only peers whose certificate carries one of the
/// allowed roles, and puts their [`Identity`] in the request's extensions.
///
/// ```
/// use tally_net::{RequireRole, Role};
/// use tonic::service::interceptor::InterceptedService;
///
/// let (_reporter, health) = tonic_health::server::health_reporter();
/// let replicas_only = InterceptedService::new(health, RequireRole::new(&[Role::Replica]));
/// let _router = tonic::transport::Server::builder().add_service(replicas_only);
/// ```
#[derive(Debug, Clone)]
pub struct RequireRole {
    allowed: Arc<[Role]>,
}

impl RequireRole {
    pub fn new(allowed: &[Role]) -> Self {
        RequireRole {
            allowed: allowed.into(),
        }
    }
}

impl Interceptor for RequireRole {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let identity = peer_identity(&request)?;
        require(&identity, &self.allowed)?;
        request.extensions_mut().insert(identity);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_caller_and_what_it_may_do() {
        // Goal: a refused caller learns which role the call needs and what its own role is for.
        // Method: require a replica of a township identity and read the status.
        let township = Identity::new(Role::Township, "T01").unwrap();
        assert!(require(&township, &[Role::Township, Role::Operator]).is_ok());
        let status = require(&township, &[Role::Replica]).unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            status.message(),
            "township:T01 may not make this call: this call needs a replica certificate; \
             a township certificate may submit the signed tally sheets of its own township \
             and read their status"
        );
        // Roles that begin with a vowel take "an".
        let operator = Identity::new(Role::Operator, "ana").unwrap();
        let status = require(&operator, &[Role::Replica]).unwrap_err();
        assert!(
            status
                .message()
                .contains("; an operator certificate may read results"),
            "{}",
            status.message()
        );
        let status = require(&township, &[Role::Operator]).unwrap_err();
        assert!(
            status
                .message()
                .contains("this call needs an operator certificate"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_request_without_tls_is_unauthenticated() {
        // Goal: a request with no peer certificate never gets an identity.
        // Method: call peer_identity and the interceptor on a bare request.
        let status = peer_identity(&Request::new(())).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let status = RequireRole::new(&Role::ALL)
            .call(Request::new(()))
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
}
