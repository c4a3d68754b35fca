//! The listener loop of an emulator: accepts TCP connections, does the TLS handshake when given
//! an acceptor, and serves HTTP/1.1 with hyper, handing every request to the emulator's router.
//! A handler that answers `Err` (an injected dropped connection) closes its connection without
//! a response. Stopping the loop aborts its open connections.
//!
//! It never reads or logs a request: routing, answers and faults are the emulator's.

use std::error::Error;
use std::future::Future;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Accepts connections until `shutdown` turns true (or its sender is dropped), serving each
/// request with `handler`; `tls` `None` serves plain HTTP.
pub async fn serve<H, F, E>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Full<Bytes>>, E>> + Send + 'static,
    E: Into<Box<dyn Error + Send + Sync>>,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (handler, tls) = (handler.clone(), tls.clone());
                connections.spawn(async move {
                    let service = service_fn(handler);
                    let result = match tls {
                        None => {
                            http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                        }
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => {
                                http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await
                            }
                            Err(error) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                                return;
                            }
                        },
                    };
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    connections.shutdown().await;
}
