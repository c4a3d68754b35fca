//! Starting and stopping an emulator: where its server certificate comes from
//! ([`TlsSource`]), the CA file clients trust (in the caller's state directory or a private
//! temporary one), binding its listeners, and the serving tasks a running emulator owns
//! ([`Serving`]: dropping it stops them).
//!
//! Only the CA certificate (public) is written to disk, never a private key; it never decides
//! what an emulator serves.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// Where the server's certificate comes from.
#[derive(Debug, Clone, Default)]
pub enum TlsSource {
    /// Generate a CA and a leaf for localhost / 127.0.0.1 (plus any extra names).
    #[default]
    Generate,
    /// Use these PEM files.
    Files {
        /// The leaf certificate, optionally followed by intermediates.
        cert_chain: PathBuf,
        /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
        /// The CA certificate clients should trust (copied to the emulator's `ca.pem`).
        ca: PathBuf,
    },
}

/// A start-up failure; each emulator maps it to its own error type.
#[derive(Debug)]
pub enum StartError {
    /// A listener could not be bound.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The state directory or the CA file could not be written.
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bind { addr, .. } => write!(f, "cannot listen on {addr}"),
            Self::Io { path, .. } => write!(f, "cannot access {}", path.display()),
        }
    }
}

impl Error for StartError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Bind { source, .. } | Self::Io { source, .. } => Some(source),
        }
    }
}

/// Binds a listener; returns it with its address (port 0 resolved to the port chosen).
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let bind_error = |source| StartError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// `localhost:PORT` for a loopback address, else `IP:PORT`: the host clients are given.
pub fn host_port(addr: SocketAddr) -> String {
    if addr.ip().is_loopback() {
        format!("localhost:{}", addr.port())
    } else {
        format!("{}:{}", addr.ip(), addr.port())
    }
}

/// The CA file and the serving tasks of a running emulator. Dropping it stops the listeners.
#[derive(Debug)]
pub struct Serving {
    ca_pem: String,
    ca_pem_path: PathBuf,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _temp_dir: Option<tempfile::TempDir>,
}

impl Serving {
    /// Writes `ca_pem` to `ca.pem` in `state_dir` (created if missing), or in a private
    /// temporary directory named `{temp_prefix}…` that lives as long as the returned value.
    pub fn new(
        state_dir: Option<&Path>,
        temp_prefix: &str,
        ca_pem: String,
    ) -> Result<Self, StartError> {
        let io_error = |path: &Path| {
            let path = path.to_owned();
            move |source| StartError::Io { path, source }
        };
        let (state_dir, temp_dir) = match state_dir {
            Some(dir) => (dir.to_owned(), None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix(temp_prefix)
                    .tempdir()
                    .map_err(io_error(&std::env::temp_dir()))?;
                (temp.path().to_owned(), Some(temp))
            }
        };
        std::fs::create_dir_all(&state_dir).map_err(io_error(&state_dir))?;
        let ca_pem_path = state_dir.join("ca.pem");
        std::fs::write(&ca_pem_path, &ca_pem).map_err(io_error(&ca_pem_path))?;
        Ok(Self {
            ca_pem,
            ca_pem_path,
            stop: watch::channel(false).0,
            tasks: Vec::new(),
            _temp_dir: temp_dir,
        })
    }

    /// Serves `listener` (over TLS when `tls` is given) with `handler` on the current tokio
    /// runtime until this is dropped or shut down.
    pub fn spawn<H, F, E>(&mut self, listener: TcpListener, tls: Option<TlsAcceptor>, handler: H)
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Response<Full<Bytes>>, E>> + Send + 'static,
        E: Into<Box<dyn Error + Send + Sync>> + 'static,
    {
        let stopped = self.stop.subscribe();
        let serve = crate::server::serve(listener, tls, handler, stopped);
        self.tasks.push(tokio::spawn(serve));
    }

    /// The CA certificate (PEM) clients trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The file holding [`Serving::ca_pem`].
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem_path
    }

    /// Stops serving and waits for the listeners to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_file_lives_as_long_as_the_serving_value() {
        let serving = Serving::new(None, "emulator-support-test-", "PEM".to_owned())
            .expect("a temporary state directory");
        let path = serving.ca_pem_path().to_owned();
        assert_eq!(std::fs::read_to_string(&path).expect("ca.pem"), "PEM");
        drop(serving);
        assert!(!path.exists());
    }

    #[test]
    fn loopback_hosts_are_named_localhost() {
        assert_eq!(
            host_port("127.0.0.1:8443".parse().expect("an address")),
            "localhost:8443"
        );
        assert_eq!(
            host_port("10.0.0.7:443".parse().expect("an address")),
            "10.0.0.7:443"
        );
    }
}
