//! The router that services hold: swapped atomically when the topology changes.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use super::Router;
use crate::id::Epoch;

/// The current [`Router`], replaceable at any time by a newer one.
///
/// Readers call [`SharedRouter::load`], which is lock-free and wait-free in
/// the common case: a lookup never waits for a topology update, and it sees
/// either the old router or the new one, never a mix. Epochs only move
/// forward: an update older than what is installed is refused, so two
/// watchers racing cannot roll the topology back.
#[derive(Debug)]
pub struct SharedRouter {
    current: ArcSwap<Router>,
}

/// A router was refused because a newer one is already installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("topology epoch {offered} is older than the installed epoch {installed}")]
pub struct StaleEpoch {
    /// The epoch already installed.
    pub installed: Epoch,
    /// The epoch that was offered.
    pub offered: Epoch,
}

impl SharedRouter {
    /// Starts with `router` installed.
    pub fn new(router: Router) -> Self {
        SharedRouter { current: ArcSwap::from_pointee(router) }
    }

    /// The installed router. Hold the guard only for the duration of a
    /// request; use [`SharedRouter::snapshot`] to keep a router longer.
    #[inline]
    pub fn load(&self) -> Guard<Arc<Router>> {
        self.current.load()
    }

    /// The installed router, as an `Arc` that can be kept.
    pub fn snapshot(&self) -> Arc<Router> {
        self.current.load_full()
    }

    /// The installed router's epoch.
    pub fn epoch(&self) -> Epoch {
        self.current.load().epoch()
    }

    /// Installs `router` unless the installed one has a newer epoch. An equal
    /// epoch replaces (a reload of the same version). Returns the router
    /// that was replaced.
    pub fn replace(&self, router: Router) -> Result<Arc<Router>, StaleEpoch> {
        let offered = Arc::new(router);
        let mut refused = None;
        let previous = self.current.rcu(|installed| {
            if installed.epoch() > offered.epoch() {
                refused = Some(StaleEpoch { installed: installed.epoch(), offered: offered.epoch() });
                Arc::clone(installed)
            } else {
                refused = None;
                Arc::clone(&offered)
            }
        });
        match refused {
            Some(stale) => Err(stale),
            None => Ok(previous),
        }
    }
}
