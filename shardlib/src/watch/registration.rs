//! A watcher that registers itself as a client of its store
//! ([`WatchOptions::register_as`]), so that operators see which services
//! follow the topology and which lag behind (shardd's `GET /v1/clients`,
//! `shardctl clients`).
//!
//! The registration reports `{"watcher": <name>, "epoch": <installed
//! epoch, null before the first load>}` and is updated after every install.
//! It is made in the background, retried with backoff while the store does
//! not answer (the watcher's own start never waits for it), removed when
//! the watcher shuts down, and dropped with it (then removed in the
//! background, or expired after the TTL if the process dies).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::backoff::Backoff;
use super::update::TopologyUpdate;
use crate::store::{Registration, TopologyStore};

/// What the registration task needs.
pub(crate) struct Reporter {
    pub(crate) store: Arc<dyn TopologyStore>,
    /// The client id.
    pub(crate) id: String,
    pub(crate) ttl: Duration,
    /// The watcher's name.
    pub(crate) name: String,
    pub(crate) updates: watch::Receiver<Arc<TopologyUpdate>>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) backoff: (Duration, Duration),
}

impl Reporter {
    /// Registers, then reports every installed epoch until shutdown.
    pub(crate) async fn run(mut self) {
        let Some(registration) = self.register().await else { return };
        loop {
            tokio::select! {
                changed = self.updates.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let value = report(&mut self.updates, &self.name);
                    if let Err(error) = registration.update(value).await {
                        tracing::debug!(client = %self.id, %error, "cannot report the epoch to the store yet");
                    }
                }
                () = stopped(&mut self.shutdown) => break,
            }
        }
        if let Err(error) = registration.close().await {
            tracing::debug!(client = %self.id, %error, "cannot remove the client registration; it expires by itself");
        }
    }

    /// Registers, retrying with backoff; `None` on shutdown.
    async fn register(&mut self) -> Option<Registration> {
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        loop {
            let value = report(&mut self.updates, &self.name);
            let error = tokio::select! {
                registered = self.store.register_client(&self.id, value, self.ttl) => match registered {
                    Ok(registration) => {
                        tracing::debug!(client = %self.id, "registered as a client of the store");
                        return Some(registration);
                    }
                    Err(error) => error,
                },
                () = stopped(&mut self.shutdown) => return None,
            };
            let delay = backoff.next_delay();
            tracing::debug!(client = %self.id, %error, ?delay, "cannot register as a client of the store; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stopped(&mut self.shutdown) => return None,
            }
        }
    }
}

/// The reported value, from the installed update.
fn report(updates: &mut watch::Receiver<Arc<TopologyUpdate>>, name: &str) -> Value {
    let update = updates.borrow_and_update();
    let epoch = if update.is_loaded() { json!(update.epoch) } else { Value::Null };
    json!({ "watcher": name, "epoch": epoch })
}

/// Resolves when the watcher shuts down (or is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
