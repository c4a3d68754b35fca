//! The serving loop shared by every gRPC service kube-kms ships on a Unix socket: tonic with a
//! call timeout, per-connection and global concurrency limits, the HTTP/2 stream limit, the
//! corrections of the codes tonic gives bad input, the [`crate::authority`] adapter on every
//! connection, and a shutdown that drains in-flight calls for at most a drain limit.
//!
//! [`serve`] takes the listener, the services (as tonic [`Routes`]), the [`Limits`] and the
//! shutdown signal from the caller, so tests bind a temporary socket and stop the server when
//! they choose. It never reads or logs a request's payload, and it never answers a malformed
//! request with a server-fault code.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixListener;
use tonic::service::Routes;
use tonic::transport::server::Connected;

/// The limits a service is served under. Each product states its own (the KMS plugin's are in
/// its `server` module); none has a default, so none is chosen by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest gRPC message accepted or sent. [`serve`] cannot reach into the generated
    /// servers inside [`Routes`]: give each one this limit with [`limit_messages!`](crate::limit_messages)
    /// before adding it, so an oversized message is refused on its length prefix.
    pub max_message_bytes: usize,
    /// How long one call may take on the server, unless the client's grpc-timeout is shorter;
    /// tonic then answers CANCELLED ("Timeout expired").
    pub call_timeout: Duration,
    /// How long shutdown waits for in-flight calls before it stops anyway: a client that never
    /// closes its connection must not hold the process (and its socket) up for ever.
    pub drain_limit: Duration,
    /// Concurrent requests handled per connection; also the HTTP/2 stream limit the server
    /// advertises, so a client queues further calls on its side instead of opening streams the
    /// server would only hold.
    pub max_concurrent_requests: usize,
    /// Concurrent requests handled over all connections together; the rest wait, within their
    /// deadline, for a slot.
    pub max_in_flight_requests: usize,
}

/// Gives a generated tonic server `limits.max_message_bytes` as its decoding and encoding
/// limit: `grpc_uds::limit_messages!(FooServer::new(service), limits)`.
#[macro_export]
macro_rules! limit_messages {
    ($server:expr, $limits:expr) => {{
        let limit = $limits.max_message_bytes;
        $server
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }};
}

/// Serves `routes` on `listener` until `shutdown` completes, then stops accepting and waits
/// for in-flight calls to finish, for at most `limits.drain_limit`. Each connection goes
/// through [`crate::AuthorityAdapter`], so clients that send the socket path as the HTTP/2
/// `:authority` are served too.
pub async fn serve(
    listener: UnixListener,
    routes: Routes,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_incoming(crate::incoming(listener), routes, limits, shutdown).await
}

/// [`serve`] with each connection handed to hyper as accepted, without the
/// [`crate::AuthorityAdapter`]: only for `benches/socket.rs`, which measures what the adapter
/// costs against this. A client that sends the socket path as `:authority` is refused here.
#[doc(hidden)]
pub async fn serve_without_authority_adapter(
    listener: UnixListener,
    routes: Routes,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    serve_incoming(incoming, routes, limits, shutdown).await
}

async fn serve_incoming<IO, IE>(
    incoming: impl tokio_stream::Stream<Item = Result<IO, IE>>,
    routes: Routes,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error>
where
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (shutdown_began, began) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = shutdown_began.send(());
    };
    let drain_limit = async move {
        match began.await {
            Ok(()) => tokio::time::sleep(limits.drain_limit).await,
            Err(_) => std::future::pending().await,
        }
    };
    let serving = tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(bad_input_codes))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            limits.max_in_flight_requests,
        ))
        .timeout(limits.call_timeout)
        .concurrency_limit_per_connection(limits.max_concurrent_requests)
        .max_concurrent_streams(u32::try_from(limits.max_concurrent_requests).ok())
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown);
    tokio::select! {
        result = serving => result,
        () = drain_limit => {
            tracing::warn!(
                limit = ?limits.drain_limit,
                "connections still open after the drain limit; stopping anyway"
            );
            Ok(())
        }
    }
}

/// Corrects the codes tonic gives two kinds of bad input before a handler ever runs, so that a
/// malformed request is never answered with a server-fault code:
/// - a message over [`Limits::max_message_bytes`] is refused on its length prefix, before it is
///   buffered, with OUT_OF_RANGE; gRPC (and every other implementation) says RESOURCE_EXHAUSTED;
/// - a message that does not decode (e.g. a string field that is not UTF-8) is INTERNAL
///   ("failed to decode Protobuf message"); it is the caller's input, so INVALID_ARGUMENT.
///
/// A service served here must never return OUT_OF_RANGE, or INTERNAL with a message starting
/// "failed to decode", itself, so that neither rewrite can hide a real server fault.
fn bad_input_codes<B>(mut response: http::Response<B>) -> http::Response<B> {
    use http::HeaderValue;
    let headers = response.headers_mut();
    let status = headers
        .get("grpc-status")
        .and_then(|status| status.to_str().ok());
    let corrected = match status
        .and_then(|status| status.parse::<i32>().ok())
        .map(tonic::Code::from)
    {
        Some(tonic::Code::OutOfRange) => Some(tonic::Code::ResourceExhausted),
        Some(tonic::Code::Internal)
            if headers
                .get("grpc-message")
                .is_some_and(|message| message.as_bytes().starts_with(b"failed to decode")) =>
        {
            Some(tonic::Code::InvalidArgument)
        }
        _ => None,
    };
    if let Some(code) = corrected {
        headers.insert("grpc-status", HeaderValue::from(code as i32));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_status(code: tonic::Code, message: &str) -> http::Response<()> {
        let mut response = http::Response::new(());
        let headers = response.headers_mut();
        headers.insert("grpc-status", (code as i32).into());
        headers.insert("grpc-message", message.parse().unwrap());
        response
    }

    fn code(response: &http::Response<()>) -> tonic::Code {
        let status = response.headers()["grpc-status"].to_str().unwrap();
        tonic::Code::from(status.parse::<i32>().unwrap())
    }

    #[test]
    fn bad_input_gets_a_caller_fault_code_and_everything_else_is_left_alone() {
        let cases = [
            (
                tonic::Code::OutOfRange,
                "too big",
                tonic::Code::ResourceExhausted,
            ),
            (
                tonic::Code::Internal,
                "failed to decode Protobuf message",
                tonic::Code::InvalidArgument,
            ),
            (tonic::Code::Internal, "a real fault", tonic::Code::Internal),
            (tonic::Code::Unavailable, "no key", tonic::Code::Unavailable),
            (tonic::Code::Ok, "", tonic::Code::Ok),
        ];
        for (given, message, expected) in cases {
            let response = bad_input_codes(with_status(given, message));
            assert_eq!(code(&response), expected, "{given:?} {message:?}");
        }
    }
}
