//! The background refresher: asks the provider for its current key every refresh interval (and
//! whenever [`RefreshTrigger`] fires, e.g. on SIGHUP) so that a new key version rotates the local
//! KEK without a restart. A failed refresh is logged and retried; it never stops serving.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::envelope::Envelope;

/// Wakes the refresher ahead of its interval.
#[derive(Clone, Default)]
pub struct RefreshTrigger(Arc<Notify>);

impl RefreshTrigger {
    /// Asks for a refresh as soon as possible.
    pub fn fire(&self) {
        self.0.notify_one();
    }
}

/// Runs until the task is dropped or aborted.
pub async fn run(envelope: Arc<Envelope>, interval: Duration, trigger: RefreshTrigger) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut current = envelope.current_key();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = trigger.0.notified() => {}
        }
        match envelope.refresh().await {
            Ok(key) if key != current => {
                tracing::info!(
                    provider = envelope.provider_kind(),
                    old_key_id = current.key_id(),
                    new_key_id = key.key_id(),
                    version = key.version(),
                    "moved to a new remote key version"
                );
                current = key;
            }
            Ok(_) => tracing::trace!("key refresh: no change"),
            Err(error) => {
                tracing::warn!(provider = envelope.provider_kind(), %error, "key refresh failed");
            }
        }
    }
}
