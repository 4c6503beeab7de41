//! Putting a township aggregator together: check its key and certificate against the
//! definition ([`prepare`]), open its database, start its writer and forwarder, and serve the
//! Township service with gRPC health checking and reflection beside it ([`start`]).
//!
//! [`start`] takes its listener from outside and runs on the caller's tokio runtime, so tests
//! run townships in-process on port 0 the same way `tally township` runs one on its port:
//!
//! ```no_run
//! # async fn example(config: &tally_township::config::TownshipConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use tally_township::server;
//! let prepared = server::prepare(config)?;
//! let listener = server::bind(prepared.listen).await?;
//! let running = server::start(prepared.setup, prepared.server_tls, listener)?;
//! println!("township {} on {}", running.township().township_id(), running.address());
//! running.stop().await;
//! # Ok(()) }
//! ```

use crate::book::Book;
use crate::config::{OutboxSettings, TownshipConfig};
use crate::error::Error;
use crate::forward::{self, CountyRoute};
use crate::limits;
use crate::service::TownshipService;
use crate::store::Store;
use crate::township::Township;
use ed25519_dalek::SigningKey;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tally_core::definition::Definition;
use tally_core::ids::{KeyId, TownshipId};
use tally_net::{Role, guard};
use tally_rpc::pb::township_server::TownshipServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::Router;
use tonic::transport::{ClientTlsConfig, ServerTlsConfig};

/// The name the health service reports the township service under.
pub const TOWNSHIP_SERVICE_NAME: &str = "tally.v1.Township";
/// How long calls in progress may take to finish once the aggregator is told to stop, before
/// their connections are dropped. With the writer's last group, a stop takes under 2 s.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);
/// How long a stop waits for the writer to store what was queued before the stop.
pub const WRITER_DRAIN_MAX: Duration = Duration::from_secs(5);
/// The largest answer (a Picture carries the township's full provisional result as JSON).
pub const ANSWER_BYTES_MAX: usize = 64 << 20;

/// Everything an aggregator needs to start, however it was configured.
pub struct TownshipSetup {
    pub township_id: TownshipId,
    pub data_dir: PathBuf,
    pub definition: Arc<Definition>,
    /// The secret key whose public key the definition registers for the township.
    pub countersign_key: SigningKey,
    /// `host:port` of each county replica.
    pub county: Vec<String>,
    /// The township's client TLS toward the county (its own certificate, the county CA).
    pub county_tls: ClientTlsConfig,
    pub outbox: OutboxSettings,
}

/// A config read and checked: the setup, the server's TLS, and the address to bind.
pub struct Prepared {
    pub setup: TownshipSetup,
    pub server_tls: ServerTlsConfig,
    pub listen: SocketAddr,
    /// Where to serve `GET /metrics` over plain HTTP, if anywhere.
    pub http_listen: Option<SocketAddr>,
}

/// A store error met while opening the data directory, as the operator sees it
/// (`data_dir: ...`).
fn data_dir(error: Error) -> Error {
    Error::DataDir(Box::new(error))
}

/// Loads a definition and the CSV files it names, relative to its own folder.
pub fn load_definition(path: &Path) -> Result<Definition, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Definition(format!(
            "cannot read the election definition {}: {e}",
            path.display()
        ))
    })?;
    let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut read_sibling = |relative: &str| -> Result<String, String> {
        let sibling = folder.join(relative);
        std::fs::read_to_string(&sibling).map_err(|e| format!("{} ({e})", sibling.display()))
    };
    tally_core::definition::load(&path.display().to_string(), &text, &mut read_sibling)
        .map_err(|errors| Error::Definition(errors.to_string()))
}

/// Reads a secret key file: 64 hex digits (the 32-byte Ed25519 seed), as `tally keygen`
/// writes, with `#` comment lines allowed.
pub fn read_secret_key(path: &Path) -> Result<SigningKey, Error> {
    let bad = |message: String| Error::KeyFile {
        file: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    let seed: [u8; 32] = hex::decode(line)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| {
            bad(
                "expected the secret key as 64 hex digits on one line, as `tally keygen` writes it"
                    .to_owned(),
            )
        })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Checks that the township is in the definition and the key is the one it registers.
fn check_key(
    definition: &Definition,
    township: &TownshipId,
    key: &SigningKey,
) -> Result<(), Error> {
    let area = definition
        .township(township)
        .ok_or_else(|| Error::UnknownTownship {
            township: township.clone(),
        })?;
    let registered = area.key_id.ok_or_else(|| Error::KeyNotRegistered {
        township: township.clone(),
    })?;
    let file_key = KeyId::of(&key.verifying_key());
    if file_key != registered {
        return Err(Error::KeyMismatch {
            township: township.clone(),
            file_key,
            registered,
        });
    }
    Ok(())
}

/// Reads everything a config names and checks it: the definition loads and has the township,
/// the key is the one the definition registers for it, the certificate is `township:<id>`.
/// Nothing is opened or bound yet.
pub fn prepare(config: &TownshipConfig) -> Result<Prepared, Error> {
    let definition = Arc::new(load_definition(&config.definition)?);
    let countersign_key = read_secret_key(&config.countersign_key)?;
    check_key(&definition, &config.township_id, &countersign_key)?;
    let (server_tls, identity) = config.tls.server_tls()?;
    if identity.role() != Role::Township || identity.name() != config.township_id.as_str() {
        return Err(Error::WrongCertificate {
            cert: config.tls.cert.clone(),
            found: identity,
            township: config.township_id.clone(),
        });
    }
    let (county_tls, _) = config.tls.client_tls("localhost")?;
    Ok(Prepared {
        setup: TownshipSetup {
            township_id: config.township_id.clone(),
            data_dir: config.data_dir.clone(),
            definition,
            countersign_key,
            county: config.county.clone(),
            county_tls,
            outbox: config.outbox,
        },
        server_tls,
        listen: config.listen,
        http_listen: config.http_listen,
    })
}

/// Binds the aggregator's address, saying what to do when the port is taken.
pub async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| Error::Bind { address, source })
}

/// A running aggregator: its core, its address, and what [`Running::stop`] stops.
pub struct Running {
    township: Arc<Township>,
    address: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    forwarder: JoinHandle<()>,
    /// Learns the county's amendments (crate::amend).
    learner: JoinHandle<()>,
    writer: JoinHandle<()>,
    /// The plain HTTP listener ([`Running::serve_http`]), when there is one.
    http: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// The address it serves on (the real port when it was bound to port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn township(&self) -> &Arc<Township> {
        &self.township
    }

    /// Serves `GET /metrics` ([`crate::http`]) on `listener` until the aggregator stops.
    pub fn serve_http(&mut self, listener: tokio::net::TcpListener) {
        let mut shutdown = self.stop.subscribe();
        self.http = Some(tokio::spawn(crate::http::serve(
            listener,
            self.township.clone(),
            async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            },
        )));
    }

    /// Stops taking calls, lets calls in progress finish for up to [`SHUTDOWN_GRACE`], stops
    /// the forwarder (a batch in flight is sent again on the next start and answered
    /// DUPLICATE), and waits for the writer to store what was queued. Returns within about
    /// two seconds.
    pub async fn stop(self) {
        let Running {
            township,
            address,
            stop,
            mut server,
            forwarder,
            learner,
            writer,
            http,
        } = self;
        // A question to the county in flight is simply dropped; it is asked again next start.
        learner.abort();
        let _ = learner.await;
        let _ = stop.send(true);
        if let Some(http) = http {
            // The scrape in progress, if any, is short; the listener stops with the rest.
            if tokio::time::timeout(SHUTDOWN_GRACE, http).await.is_err() {
                tracing::info!(%address, "the HTTP listener did not stop within the grace period");
            }
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(%address, error = %e, "the gRPC server ended with an error")
            }
            Ok(Err(e)) => tracing::warn!(%address, error = %e, "the gRPC server task failed"),
            Err(_) => {
                tracing::info!(%address, "calls still open after the grace period are dropped");
                server.abort();
                let _ = server.await;
            }
        }
        let _ = forwarder.await;
        township.close_writer();
        drop(township);
        if tokio::time::timeout(WRITER_DRAIN_MAX, writer)
            .await
            .is_err()
        {
            tracing::error!(%address, "the writer did not finish storing within {WRITER_DRAIN_MAX:?}");
        }
        tracing::info!(%address, "township aggregator stopped");
    }
}

/// [`prepare`], [`bind`] and [`start`] in one: the aggregator a config file describes, on its
/// `listen` address, on the current tokio runtime.
pub async fn start_from_config(config: &TownshipConfig) -> Result<Running, Error> {
    let prepared = prepare(config)?;
    let listener = bind(prepared.listen).await?;
    start(prepared.setup, prepared.server_tls, listener)
}

/// Opens the township's data directory, starts its writer and forwarder, and serves it on
/// `listener` with mutual TLS. Must be called inside a tokio runtime; everything runs on it.
pub fn start(
    setup: TownshipSetup,
    server_tls: ServerTlsConfig,
    listener: tokio::net::TcpListener,
) -> Result<Running, Error> {
    check_key(
        &setup.definition,
        &setup.township_id,
        &setup.countersign_key,
    )?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::Server(format!("the listener has no address: {e}")))?;
    let (store, loaded) = Store::open(&setup.data_dir, &setup.township_id).map_err(data_dir)?;
    let sheets = loaded.sheets.len();
    let book = Book::rebuild(loaded).map_err(data_dir)?;
    let depth = book.outbox.len();
    let (township, writer) = Township::new(
        setup.township_id.clone(),
        setup.definition,
        setup.outbox,
        store,
        book,
    );
    let (stop, stopped) = watch::channel(false);
    let route = CountyRoute {
        addresses: setup.county,
        tls: setup.county_tls,
        countersign_key: setup.countersign_key,
    };
    let learner = tokio::spawn(crate::amend::learn(
        township.clone(),
        route.clone(),
        stopped.clone(),
    ));
    let forwarder = tokio::spawn(forward::run(township.clone(), route, stopped.clone()));
    let server = tonic::transport::Server::builder()
        .tls_config(server_tls)
        .map_err(|e| Error::Server(format!("TLS configuration: {e}")))?
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)));
    let router = router(server, township.clone());
    // Small answers must not wait for Nagle's algorithm (tonic's `tcp_nodelay` does not reach
    // sockets from a listener given to it, so it is set here).
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(30)));
    let incoming = tally_net::limit_connections(incoming, limits::CONNECTIONS_MAX);
    let mut shutdown = stopped;
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    }));
    tracing::info!(
        township = %setup.township_id,
        %address,
        data_dir = %setup.data_dir.display(),
        sheets,
        outbox = depth,
        "township aggregator serving"
    );
    Ok(Running {
        township,
        address,
        stop,
        server,
        forwarder,
        learner,
        writer,
        http: None,
    })
}

/// Adds the aggregator's services to `server`: Township, grpc.health.v1 (SERVING for
/// `tally.v1.Township` and the whole server while it runs) and gRPC reflection (v1 and
/// v1alpha, listing these services only), each behind its limits ([`crate::limits`]), with
/// the streams per connection limited.
pub fn router(mut server: tonic::transport::Server, township: Arc<Township>) -> Router {
    let (reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        reporter
            .set_service_status(TOWNSHIP_SERVICE_NAME, tonic_health::ServingStatus::Serving)
            .await;
    });
    let here = township.township.clone();
    let who = limits::server_name(&here);
    let (reflection_v1, reflection_v1alpha) =
        tally_rpc::reflection::reflection(&[TOWNSHIP_SERVICE_NAME]);
    // The limits are checked before a request body is read (see `crate::limits`); tonic's own
    // decode limit, per service, is set to the service's largest method as a second fence.
    let limits = limits::township(&here);
    let health_limits = tally_net::health_limits(who.clone());
    let v1_limits = tally_net::reflection_limits(tally_rpc::reflection::REFLECTION_V1, who.clone());
    let v1alpha_limits =
        tally_net::reflection_limits(tally_rpc::reflection::REFLECTION_V1ALPHA, who);
    server = server
        .max_concurrent_streams(limits::STREAMS_PER_CONNECTION_MAX)
        .concurrency_limit_per_connection(limits::STREAMS_PER_CONNECTION_MAX as usize);
    server
        .add_service(guard(
            health.max_decoding_message_size(health_limits.message_bytes_max()),
            health_limits,
        ))
        .add_service(guard(
            reflection_v1.max_decoding_message_size(v1_limits.message_bytes_max()),
            v1_limits,
        ))
        .add_service(guard(
            reflection_v1alpha.max_decoding_message_size(v1alpha_limits.message_bytes_max()),
            v1alpha_limits,
        ))
        .add_service(guard(
            TownshipServer::new(TownshipService { township })
                .max_decoding_message_size(limits.message_bytes_max())
                .max_encoding_message_size(ANSWER_BYTES_MAX),
            limits,
        ))
}
