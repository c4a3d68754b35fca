//! The shared state of one emulator: its fixed configuration, the secrets and parameters, the
//! identity directory and the fault plan, each behind its own lock (never held across an
//! `.await`).

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::faults::Faults;
use crate::identity::Directory;
use crate::store::Store;

/// Settings fixed at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// The region in ARNs.
    pub region: String,
    /// The default account.
    pub account_id: String,
    /// `localhost:PORT`.
    pub default_host: String,
    /// Where `ca.pem` is.
    pub ca_pem_path: PathBuf,
    /// The plain-HTTP metadata listener, if any.
    pub metadata_url: Option<String>,
    /// Lifetime of the ECS RAM role credentials.
    pub ecs_credentials_lifetime: Duration,
}

/// Everything the listeners share.
pub struct Shared {
    /// Fixed settings.
    pub config: Config,
    store: Mutex<Store>,
    directory: Mutex<Directory>,
    faults: Mutex<Faults>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves data that is still consistent enough for a test
    // fixture: keep serving.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Empty state.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            store: Mutex::new(Store::default()),
            directory: Mutex::new(Directory::default()),
            faults: Mutex::new(Faults::default()),
        }
    }

    /// Secrets and parameters.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// Identities and sessions.
    pub fn directory(&self) -> MutexGuard<'_, Directory> {
        lock(&self.directory)
    }

    /// Faults and counters.
    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }
}
