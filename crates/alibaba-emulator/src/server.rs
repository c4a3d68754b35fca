//! Listeners: the HTTPS listener (rustls, HTTP/1.1 via hyper) and the plain-HTTP metadata
//! listener. A request answered with `Dropped` closes its connection without a response;
//! stopping a listener aborts its open connections.

use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::router::{self, Listener};
use crate::state::Shared;

async fn connection<S>(stream: S, shared: Arc<Shared>, kind: Listener)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| router::handle(Arc::clone(&shared), kind, request));
    if let Err(error) = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%error, "connection ended");
    }
}

/// Accepts connections until `shutdown` turns true (or its sender is dropped).
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    kind: Listener,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let (shared, tls) = (Arc::clone(&shared), tls.clone());
                connections.spawn(async move {
                    match tls {
                        None => connection(stream, shared, kind).await,
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => connection(stream, shared, kind).await,
                            Err(error) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        },
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
