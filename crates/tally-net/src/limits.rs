//! Bounds a server keeps on what its callers may make it hold, enforced before a request body
//! is read.
//!
//! A certificate from the county CA only proves the caller is someone the county knows; a
//! polling unit's device is not a replica, and a township is not an operator. So the role a
//! call needs is checked on the request's headers, before tonic decodes a byte of its body,
//! and each method's messages are held to the size of the largest legitimate one:
//!
//! - [`guard`] wraps a generated tonic server in [`Guarded`], which looks up the called method
//!   in its [`MethodLimit`] table and refuses at once (the body is never read) a caller whose
//!   certificate has no allowed role, or who has [`MethodLimit::in_flight_per_caller`] calls of
//!   this method in progress already (RESOURCE_EXHAUSTED), or when the whole server has
//!   [`MethodLimit::in_flight_max`] of them in progress. It then reads the body through a
//!   counter of the gRPC length prefixes: a message that declares more than
//!   [`MethodLimit::message_bytes_max`] ends the call with RESOURCE_EXHAUSTED before its first
//!   byte is buffered. The handlers keep their own, finer checks (a township may send only
//!   its own sheets).
//! - [`limit_connections`] holds at most a fixed number of connections open, as mini-redis's
//!   `MAX_CONNECTIONS`: the next connection is accepted only when one has closed, so a flood
//!   of connections waits in the listen backlog instead of in the server's memory.
//!
//! tonic's `max_decoding_message_size` is per service; the length-prefix check here is per
//! method. Servers set both: tonic's to the largest method of the service, as a second fence.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::codegen::{Bytes, Service};
use tonic::server::NamedService;
use tonic::transport::server::Connected;

use crate::{Identity, Role};

/// The length of a gRPC message's prefix: a compression flag and a 4-byte big-endian length.
const GRPC_PREFIX_BYTES: usize = 5;

/// What one method of a service allows.
#[derive(Debug, Clone)]
pub struct MethodLimit {
    /// The method's name as in the .proto file (`Ingest`).
    pub method: &'static str,
    /// Roles whose certificates may call it; every other role is refused before the body.
    pub roles: &'static [Role],
    /// The largest message (each message of a stream) it accepts, in bytes: sized to the
    /// largest legitimate message, with the reason in a comment where the table is written.
    pub message_bytes_max: usize,
    /// Calls of this method one caller (one certificate identity) may have in progress.
    pub in_flight_per_caller: usize,
    /// Calls of this method all callers together may have in progress.
    pub in_flight_max: usize,
}

/// The limits of one service: one [`MethodLimit`] per method, and who the server is (named in
/// refusals, so a caller can tell which server refused it).
#[derive(Debug)]
pub struct ServiceLimits {
    service: &'static str,
    server: String,
    methods: Vec<MethodLimit>,
    /// Calls in progress per (method index, caller), and per method under [`ALL_CALLERS`];
    /// an entry is removed when its count returns to zero, so the map holds only callers with
    /// calls in progress.
    in_flight: Mutex<HashMap<(usize, String), usize>>,
}

/// The key under which calls of a method from all callers are counted.
const ALL_CALLERS: &str = "";

impl ServiceLimits {
    /// The method limits of `service` (its full name, `tally.v1.County`) on the server
    /// `server` (said in refusals: `replica 2`, `township T01's aggregator`).
    pub fn new(
        service: &'static str,
        server: impl Into<String>,
        methods: Vec<MethodLimit>,
    ) -> Self {
        ServiceLimits {
            service,
            server: server.into(),
            methods,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The full name of the service the limits are for.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The table's entry for `method`.
    pub fn method(&self, method: &str) -> Option<&MethodLimit> {
        self.methods.iter().find(|m| m.method == method)
    }

    /// The largest message any method of the service accepts: what tonic's own
    /// `max_decoding_message_size` is set to.
    pub fn message_bytes_max(&self) -> usize {
        self.methods
            .iter()
            .map(|m| m.message_bytes_max)
            .max()
            .unwrap_or(0)
    }

    /// Checks a call from its headers alone: the method exists, the caller's role may call
    /// it, and it is within the in-flight limits. The returned ticket holds the call's place
    /// until it is dropped.
    fn admit(
        self: &Arc<Self>,
        path: &str,
        extensions: &http::Extensions,
    ) -> Result<(usize, Identity, InFlight), Status> {
        let method = path
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(self.service))
            .and_then(|p| p.strip_prefix('/'))
            .unwrap_or(path);
        let Some(index) = self.methods.iter().position(|m| m.method == method) else {
            return Err(Status::unimplemented(format!(
                "{} has no method {path} in service {}",
                self.server, self.service
            )));
        };
        let limit = &self.methods[index];
        let identity = crate::auth::identity_in(extensions)?;
        crate::auth::require(&identity, limit.roles)?;
        let caller = identity.to_string();
        let mut in_flight = self.in_flight.lock().unwrap();
        let mine = in_flight
            .get(&(index, caller.clone()))
            .copied()
            .unwrap_or(0);
        if mine >= limit.in_flight_per_caller {
            return Err(Status::resource_exhausted(format!(
                "{identity} has {mine} {}/{} calls in progress at {}, the most one caller may have; wait for their answers before sending more",
                self.service, limit.method, self.server
            )));
        }
        let all = in_flight
            .get(&(index, ALL_CALLERS.to_owned()))
            .copied()
            .unwrap_or(0);
        if all >= limit.in_flight_max {
            return Err(Status::resource_exhausted(format!(
                "{} has {all} {}/{} calls in progress, the most it takes at once; send again in a few seconds",
                self.server, self.service, limit.method
            )));
        }
        *in_flight.entry((index, caller.clone())).or_insert(0) += 1;
        *in_flight
            .entry((index, ALL_CALLERS.to_owned()))
            .or_insert(0) += 1;
        Ok((
            index,
            identity,
            InFlight {
                limits: self.clone(),
                index,
                caller,
            },
        ))
    }
}

/// The largest health check request: one service name.
pub const HEALTH_REQUEST_BYTES_MAX: usize = 4 << 10;
/// Health checks one caller may have in progress (a `Watch` holds its place until it ends).
pub const HEALTH_IN_FLIGHT_PER_CALLER: usize = 16;
/// Health checks all callers together may have in progress.
pub const HEALTH_IN_FLIGHT_MAX: usize = 256;
/// The largest reflection request: a file or symbol name.
pub const REFLECTION_REQUEST_BYTES_MAX: usize = 64 << 10;
/// Reflection streams one caller may have open.
pub const REFLECTION_IN_FLIGHT_PER_CALLER: usize = 4;
/// Reflection streams all callers together may have open.
pub const REFLECTION_IN_FLIGHT_MAX: usize = 64;

/// `grpc.health.v1.Health` on `server`: open to every certificate of the CA (load balancers
/// and `tally status` ask it, whatever their role), with small messages.
pub fn health_limits(server: impl Into<String>) -> Arc<ServiceLimits> {
    let check = |method| MethodLimit {
        method,
        roles: &Role::ALL,
        message_bytes_max: HEALTH_REQUEST_BYTES_MAX,
        in_flight_per_caller: HEALTH_IN_FLIGHT_PER_CALLER,
        in_flight_max: HEALTH_IN_FLIGHT_MAX,
    };
    Arc::new(ServiceLimits::new(
        "grpc.health.v1.Health",
        server,
        vec![check("Check"), check("Watch")],
    ))
}

/// A gRPC reflection service (`grpc.reflection.v1.ServerReflection` or its v1alpha) on
/// `server`: open to every certificate of the CA, with small messages.
pub fn reflection_limits(service: &'static str, server: impl Into<String>) -> Arc<ServiceLimits> {
    Arc::new(ServiceLimits::new(
        service,
        server,
        vec![MethodLimit {
            method: "ServerReflectionInfo",
            roles: &Role::ALL,
            message_bytes_max: REFLECTION_REQUEST_BYTES_MAX,
            in_flight_per_caller: REFLECTION_IN_FLIGHT_PER_CALLER,
            in_flight_max: REFLECTION_IN_FLIGHT_MAX,
        }],
    ))
}

/// A call's place in the in-flight counts, given back when dropped (when the response body
/// has been sent or the call is abandoned).
struct InFlight {
    limits: Arc<ServiceLimits>,
    index: usize,
    caller: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut in_flight = self.limits.in_flight.lock().unwrap();
        for key in [
            (self.index, std::mem::take(&mut self.caller)),
            (self.index, ALL_CALLERS.to_owned()),
        ] {
            if let Some(count) = in_flight.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    in_flight.remove(&key);
                }
            }
        }
    }
}

/// A tonic service behind its [`ServiceLimits`]; add it to a router like the service itself.
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    limits: Arc<ServiceLimits>,
}

/// Wraps `inner` (a generated tonic server, with tonic's own decode limit already set) in
/// `limits`.
pub fn guard<S: NamedService>(inner: S, limits: Arc<ServiceLimits>) -> Guarded<S> {
    assert_eq!(
        limits.service,
        S::NAME,
        "the limits are written for the service they guard"
    );
    Guarded { inner, limits }
}

impl<S> Guarded<S> {
    pub fn limits(&self) -> &Arc<ServiceLimits> {
        &self.limits
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Guarded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (index, identity, ticket) = match self
            .limits
            .admit(request.uri().path(), request.extensions())
        {
            Ok(admitted) => admitted,
            Err(status) => return Box::pin(std::future::ready(Ok(status.into_http()))),
        };
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(identity);
        let body = Body::new(PrefixLimited {
            inner: body,
            limit: self.limits.methods[index].message_bytes_max,
            limits: self.limits.clone(),
            index,
            prefix: [0; GRPC_PREFIX_BYTES],
            prefix_len: 0,
            body_left: 0,
            failed: false,
        });
        // The service was made ready by `poll_ready`; the clone takes its place for the next
        // call (the usual tower pattern, as the clone may not be ready).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let call = inner.call(http::Request::from_parts(parts, body));
        Box::pin(async move {
            let response = call.await?;
            // The ticket lives as long as the response body, so a streaming answer keeps its
            // place until it ends.
            Ok(response.map(|body| {
                Body::new(Holding {
                    inner: body,
                    _ticket: ticket,
                })
            }))
        })
    }
}

/// A request body read through a counter of gRPC length prefixes: it ends with
/// RESOURCE_EXHAUSTED at the first prefix that declares more than `limit` bytes, before the
/// message's bytes are read.
struct PrefixLimited {
    inner: Body,
    limit: usize,
    /// The service and method, named in the refusal (formatted only then).
    limits: Arc<ServiceLimits>,
    index: usize,
    prefix: [u8; GRPC_PREFIX_BYTES],
    prefix_len: usize,
    body_left: usize,
    failed: bool,
}

impl PrefixLimited {
    /// Walks `data` through the prefix and message state; an error names the declared size.
    fn count(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(data.len());
                self.body_left -= n;
                data = &data[n..];
                continue;
            }
            let n = (GRPC_PREFIX_BYTES - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == GRPC_PREFIX_BYTES {
                self.prefix_len = 0;
                let declared = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]) as usize;
                if declared > self.limit {
                    return Err(Status::resource_exhausted(format!(
                        "{}/{} refused by {}: the message is {declared} bytes, more than the {} this method takes; nothing of it was read (a batch too large is split into smaller ones)",
                        self.limits.service,
                        self.limits.methods[self.index].method,
                        self.limits.server,
                        self.limit
                    )));
                }
                self.body_left = declared;
            }
        }
        Ok(())
    }
}

impl http_body::Body for PrefixLimited {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref()
            && let Err(status) = self.count(data)
        {
            self.failed = true;
            return Poll::Ready(Some(Err(status)));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its call's [`InFlight`] place until it is dropped.
struct Holding {
    inner: Body,
    _ticket: InFlight,
}

impl http_body::Body for Holding {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

// ---------------------------------------------------------------- connections

/// Accepted connections that hold one of the server's connection permits until they close.
///
/// ```
/// # async fn run() -> std::io::Result<()> {
/// use tonic::transport::server::TcpIncoming;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let incoming = tally_net::limit_connections(TcpIncoming::from(listener), 1024);
/// # drop(incoming);
/// # Ok(())
/// # }
/// ```
pub fn limit_connections<I, IO, E>(incoming: I, connections_max: usize) -> LimitedIncoming<I>
where
    I: Stream<Item = Result<IO, E>> + Unpin,
{
    LimitedIncoming {
        incoming,
        permits: Arc::new(Semaphore::new(connections_max)),
        waiting: None,
    }
}

/// The stream [`limit_connections`] returns: it accepts the next connection only while fewer
/// than its maximum are open.
pub struct LimitedIncoming<I> {
    incoming: I,
    permits: Arc<Semaphore>,
    waiting: Option<Pin<Box<dyn Future<Output = OwnedSemaphorePermit> + Send>>>,
}

impl<I, IO, E> Stream for LimitedIncoming<I>
where
    I: Stream<Item = Result<IO, E>> + Unpin,
{
    type Item = Result<Permitted<IO>, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.waiting.is_none() {
            let permits = this.permits.clone();
            this.waiting = Some(Box::pin(async move {
                permits
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed")
            }));
        }
        let permit = match this.waiting.as_mut().expect("set above").as_mut().poll(cx) {
            Poll::Ready(permit) => permit,
            Poll::Pending => return Poll::Pending,
        };
        match Pin::new(&mut this.incoming).poll_next(cx) {
            Poll::Ready(Some(Ok(io))) => {
                this.waiting = None;
                Poll::Ready(Some(Ok(Permitted {
                    io,
                    _permit: permit,
                })))
            }
            Poll::Ready(Some(Err(e))) => {
                // The permit is kept for the next connection.
                this.waiting = Some(Box::pin(std::future::ready(permit)));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                this.waiting = Some(Box::pin(std::future::ready(permit)));
                Poll::Pending
            }
        }
    }
}

/// A connection holding one of the server's connection permits.
pub struct Permitted<IO> {
    io: IO,
    _permit: OwnedSemaphorePermit,
}

impl<IO: Connected> Connected for Permitted<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Permitted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Permitted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tonic::Code;

    fn prefix(declared: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&declared.to_be_bytes());
        bytes
    }

    fn limited(limit: usize) -> PrefixLimited {
        PrefixLimited {
            inner: Body::empty(),
            limit,
            limits: Arc::new(ServiceLimits::new(
                "tally.v1.County",
                "replica 1",
                vec![MethodLimit {
                    method: "Ingest",
                    roles: &[Role::Township],
                    message_bytes_max: limit,
                    in_flight_per_caller: 1,
                    in_flight_max: 1,
                }],
            )),
            index: 0,
            prefix: [0; GRPC_PREFIX_BYTES],
            prefix_len: 0,
            body_left: 0,
            failed: false,
        }
    }

    #[tokio::test]
    async fn a_connection_over_the_limit_waits_until_one_closes() {
        // Goal: at most `connections_max` connections are held; the next is accepted only
        // when one closes, not refused. Method: a limit of one over a real listener; connect
        // twice and see the second accepted only after the first is dropped.
        use tokio_stream::StreamExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut incoming = Box::pin(limit_connections(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            1,
        ));
        let _first_client = tokio::net::TcpStream::connect(address).await.unwrap();
        let first = incoming.next().await.unwrap().unwrap();
        let _second_client = tokio::net::TcpStream::connect(address).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(200), incoming.next()).await;
        assert!(
            waited.is_err(),
            "the second connection waits while the first is open"
        );
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), incoming.next())
            .await
            .expect("the second connection is accepted once the first closed");
        assert!(second.unwrap().is_ok());
    }

    #[test]
    fn a_prefix_over_the_limit_is_refused_however_the_bytes_arrive() {
        // Goal: the counter reads every message's declared length, whether a frame holds
        // several messages or a prefix is split across frames, and refuses the first one over
        // the limit. Method: feed two messages within the limit and one over it, byte by byte
        // and all at once.
        let mut stream = Vec::new();
        for (declared, fill) in [(3u32, 1u8), (0, 0), (10, 2)] {
            stream.extend(prefix(declared));
            stream.extend(std::iter::repeat_n(fill, declared as usize));
        }
        stream.extend(prefix(11));
        let mut whole = limited(10);
        let status = whole.count(&stream).unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "tally.v1.County/Ingest refused by replica 1: the message is 11 bytes, more than \
             the 10 this method takes; nothing of it was read (a batch too large is split into \
             smaller ones)"
        );
        let mut bytewise = limited(10);
        let (last, rest) = stream.split_last().unwrap();
        for byte in rest {
            bytewise.count(std::slice::from_ref(byte)).unwrap();
        }
        assert!(bytewise.count(std::slice::from_ref(last)).is_err());
        let mut within = limited(11);
        within.count(&stream).unwrap();
    }
}
