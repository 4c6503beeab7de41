//! gRPC reflection for a tally server: both versions of the protocol (v1, and v1alpha, which
//! older clients such as Python's grpcio-reflection still speak), each listing only the
//! services the server serves. The descriptor set holds every tally.v1 file, so without the
//! list a replica would offer the township's service and a township the county's.

use std::collections::BTreeSet;
use tonic_reflection::server::v1::{ServerReflection as V1, ServerReflectionServer as V1Server};
use tonic_reflection::server::v1alpha::{
    ServerReflection as V1Alpha, ServerReflectionServer as V1AlphaServer,
};

/// The name of reflection v1's service.
pub const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
/// The name of reflection v1alpha's service.
pub const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";
/// The name of the standard health service.
pub const HEALTH: &str = "grpc.health.v1.Health";

/// Reflection v1 and v1alpha for a server that serves `services` (full names, such as
/// `tally.v1.County`) besides health and reflection itself.
pub fn reflection(
    services: &[&str],
) -> (
    V1Server<impl V1 + use<>>,
    V1AlphaServer<impl V1Alpha + use<>>,
) {
    let listed = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            );
        for name in services
            .iter()
            .copied()
            .chain([HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA])
        {
            builder = builder.with_service_name(name);
        }
        builder
    };
    (
        listed()
            .build_v1()
            .expect("the descriptor sets are built with the binary"),
        listed()
            .build_v1alpha()
            .expect("the descriptor sets are built with the binary"),
    )
}

/// One `list_services_*` function per reflection version: the two versions' messages are the
/// same in shape but distinct types.
macro_rules! list_services {
    ($(#[$doc:meta])* $name:ident, $version:ident, $service:expr) => {
        $(#[$doc])*
        pub async fn $name(
            channel: tonic::transport::Channel,
        ) -> Result<BTreeSet<String>, tonic::Status> {
            use tonic_reflection::pb::$version::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
            };
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let answer = ServerReflectionClient::new(channel)
                .server_reflection_info(tokio_stream::iter([request]))
                .await?
                .into_inner()
                .message()
                .await?;
            match answer.and_then(|a| a.message_response) {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    Ok(list.service.into_iter().map(|s| s.name).collect())
                }
                other => Err(tonic::Status::unknown(format!(
                    "{} answered a list request with {other:?}, not a list of services",
                    $service
                ))),
            }
        }
    };
}

list_services!(
    /// The services a server lists through reflection v1, as `grpcurl list` shows them: a
    /// check for operators' tools and the tests that a server offers what it serves and
    /// nothing else.
    list_services_v1,
    v1,
    REFLECTION_V1
);

list_services!(
    /// The services a server lists through reflection v1alpha, which older clients (Python's
    /// grpcio-reflection) speak.
    list_services_v1alpha,
    v1alpha,
    REFLECTION_V1ALPHA
);
