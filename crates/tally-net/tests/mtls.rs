//! Real tonic servers on 127.0.0.1:0 with mutual TLS: who gets in, and who is refused.
//!
//! The services are the standard gRPC health service, and a health service of our own whose
//! handler authorizes by role, as the county's handlers will.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally_net::{
    Identity, LeafFiles, RequireRole, Role, authorized_identity, client_tls, make_ca, make_leaf,
    peer_identity, require, server_tls,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::codegen::BoxStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Server};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_check_response};

/// How long a test waits for a server to answer before it fails.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between connection attempts while polling for a server.
const CONNECT_RETRY_INTERVAL: Duration = Duration::from_millis(20);

struct County {
    ca_pem: String,
    replica: LeafFiles,
    township: LeafFiles,
    operator: LeafFiles,
}

fn make_county(name: &str) -> County {
    let ca = make_ca(name).unwrap();
    County {
        replica: make_leaf(&ca, Role::Replica, "1", &[], 30).unwrap(),
        township: make_leaf(&ca, Role::Township, "T01", &[], 30).unwrap(),
        operator: make_leaf(&ca, Role::Operator, "alice", &[], 30).unwrap(),
        ca_pem: ca.cert_pem,
    }
}

/// A running server; dropping it shuts the server down.
struct Running {
    addr: SocketAddr,
    _shutdown: oneshot::Sender<()>,
}

/// Starts a server with mutual TLS as replica 1 of `county`, with `add` adding services.
async fn start<F>(county: &County, add: F) -> Running
where
    F: FnOnce(&mut Server) -> tonic::transport::server::Router,
{
    let tls = server_tls(
        &county.ca_pem,
        &county.replica.cert_pem,
        &county.replica.key_pem,
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut builder = Server::builder().tls_config(tls).unwrap();
    let router = add(&mut builder);
    let (shutdown, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        _shutdown: shutdown,
    }
}

fn endpoint(addr: SocketAddr, tls: ClientTlsConfig) -> Endpoint {
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .connect_timeout(CONNECT_DEADLINE)
        .timeout(CONNECT_DEADLINE)
        .tls_config(tls)
        .unwrap()
}

/// Connects and sends one health check, retrying connection failures until the deadline:
/// for a client that is expected to get in.
async fn check_until_deadline(
    addr: SocketAddr,
    tls: ClientTlsConfig,
) -> Result<HealthCheckResponse, Status> {
    let deadline = Instant::now() + CONNECT_DEADLINE;
    loop {
        match endpoint(addr, tls.clone()).connect().await {
            Ok(channel) => return check(channel).await,
            Err(e) if Instant::now() >= deadline => {
                panic!("no connection to {addr} within {CONNECT_DEADLINE:?}: {e:?}")
            }
            Err(_) => tokio::time::sleep(CONNECT_RETRY_INTERVAL).await,
        }
    }
}

/// Connects once and sends one health check: for a client that is expected to be refused.
/// The listener is bound before the server task starts, so there is nothing to wait for;
/// the whole attempt is bounded by the deadline.
async fn check_once(addr: SocketAddr, tls: ClientTlsConfig) -> Result<HealthCheckResponse, String> {
    let attempt = async {
        let channel = endpoint(addr, tls)
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        check(channel).await.map_err(|s| format!("call: {s:?}"))
    };
    tokio::time::timeout(CONNECT_DEADLINE, attempt)
        .await
        .expect("a refused client is refused within the deadline")
}

async fn check(channel: Channel) -> Result<HealthCheckResponse, Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(Response::into_inner)
}

fn client(county: &County, leaf: &LeafFiles) -> ClientTlsConfig {
    client_tls(&county.ca_pem, &leaf.cert_pem, &leaf.key_pem, "localhost").unwrap()
}

fn serving() -> i32 {
    health_check_response::ServingStatus::Serving as i32
}

#[tokio::test]
async fn township_with_a_county_certificate_gets_in() {
    // Goal: a township client with a certificate from the county CA reaches the standard
    // health service over mutual TLS, verifying the server as `localhost`.
    // Method: serve tonic-health with replica 1's certificate; check health as township T01.
    let county = make_county("Test County");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let server = start(&county, |b| b.add_service(health)).await;
    let answer = check_until_deadline(server.addr, client(&county, &county.township))
        .await
        .unwrap();
    assert_eq!(answer.status, serving());
}

#[tokio::test]
async fn client_without_a_certificate_is_refused() {
    // Goal: the server requires a client certificate; TLS alone is not enough.
    // Method: a client that trusts the county CA but presents no certificate; first show a
    // certified client gets in, then that the uncertified one fails. Under TLS 1.3 the
    // client hears the server's alert on its first call, not when it connects.
    let county = make_county("Test County");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let server = start(&county, |b| b.add_service(health)).await;
    check_until_deadline(server.addr, client(&county, &county.operator))
        .await
        .unwrap();

    let no_cert = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&county.ca_pem))
        .domain_name("localhost");
    let refused = check_once(server.addr, no_cert).await;
    let refusal = refused.expect_err("refused");
    assert!(refusal.contains("CertificateRequired"), "{refusal}");
}

#[tokio::test]
async fn client_with_another_county_certificate_is_refused() {
    // Goal: a certificate from another CA does not get in, even for a known role and name;
    // and a client does not trust a server of another CA.
    // Method: the tonic configuration is built by hand, since client_tls itself refuses a
    // certificate that its CA did not issue.
    let county = make_county("Test County");
    let other = make_county("Other County");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let server = start(&county, |b| b.add_service(health)).await;
    check_until_deadline(server.addr, client(&county, &county.township))
        .await
        .unwrap();

    let foreign = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&county.ca_pem))
        .identity(tonic::transport::Identity::from_pem(
            &other.township.cert_pem,
            &other.township.key_pem,
        ))
        .domain_name("localhost");
    let refused = check_once(server.addr, foreign).await;
    let refusal = refused.expect_err("refused");
    assert!(refusal.contains("UnknownCA"), "{refusal}");

    // The other county's own client trusts only its own CA, so it refuses this server.
    let refused = check_once(server.addr, client(&other, &other.township)).await;
    let refusal = refused.expect_err("refused");
    assert!(refusal.contains("UnknownIssuer"), "{refusal}");
}

/// A health service whose handler authorizes by role and records who called.
struct ReplicaOnly {
    callers: Arc<Mutex<Vec<Identity>>>,
}

#[tonic::async_trait]
impl Health for ReplicaOnly {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let caller = peer_identity(&request)?;
        require(&caller, &[Role::Replica])?;
        self.callers.lock().unwrap().push(caller);
        Ok(Response::new(HealthCheckResponse { status: serving() }))
    }

    type WatchStream = BoxStream<HealthCheckResponse>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not needed by the tests"))
    }
}

#[tokio::test]
async fn handler_requiring_a_replica_refuses_a_township() {
    // Goal: a handler that requires Role::Replica lets a replica in and refuses a township
    // with PermissionDenied, though the township's certificate is valid.
    // Method: serve ReplicaOnly; call it as replica 1, then as township T01.
    let county = make_county("Test County");
    let callers = Arc::new(Mutex::new(Vec::new()));
    let service = HealthServer::new(ReplicaOnly {
        callers: callers.clone(),
    });
    let server = start(&county, |b| b.add_service(service)).await;

    let answer = check_until_deadline(server.addr, client(&county, &county.replica))
        .await
        .unwrap();
    assert_eq!(answer.status, serving());
    assert_eq!(*callers.lock().unwrap(), [Identity::replica(1).unwrap()]);

    let status = check_until_deadline(server.addr, client(&county, &county.township))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("township:T01 may not make this call")
    );
    assert_eq!(callers.lock().unwrap().len(), 1);
}

/// A health service that reports the identity the interceptor authorized.
struct Recorder {
    callers: Arc<Mutex<Vec<Option<Identity>>>>,
}

#[tonic::async_trait]
impl Health for Recorder {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.callers
            .lock()
            .unwrap()
            .push(authorized_identity(&request).cloned());
        Ok(Response::new(HealthCheckResponse { status: serving() }))
    }

    type WatchStream = BoxStream<HealthCheckResponse>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not needed by the tests"))
    }
}

#[tokio::test]
async fn interceptor_admits_only_the_allowed_roles() {
    // Goal: RequireRole refuses other roles before the handler runs and hands the handler
    // the caller's identity.
    // Method: serve Recorder behind RequireRole(Operator); call as operator, then township.
    let county = make_county("Test County");
    let callers = Arc::new(Mutex::new(Vec::new()));
    let service = InterceptedService::new(
        HealthServer::new(Recorder {
            callers: callers.clone(),
        }),
        RequireRole::new(&[Role::Operator]),
    );
    let server = start(&county, |b| b.add_service(service)).await;

    check_until_deadline(server.addr, client(&county, &county.operator))
        .await
        .unwrap();
    let status = check_until_deadline(server.addr, client(&county, &county.township))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let operator = Identity::new(Role::Operator, "alice").unwrap();
    assert_eq!(*callers.lock().unwrap(), [Some(operator)]);
}
