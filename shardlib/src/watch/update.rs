//! What subscribers receive: one installed topology and what changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::id::{Epoch, KeyspaceName};
use crate::store::Change;
use crate::topology::Topology;

/// Why a topology was installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UpdateKind {
    /// Nothing is loaded yet: an empty topology at epoch 0. Only a watcher
    /// made with [`start_lazy`](super::TopologyWatcher::start_lazy) shows it,
    /// until its first load.
    Placeholder,
    /// The first load.
    Initial,
    /// A change seen on the watch stream.
    Change,
    /// The whole topology was read again, because the history the watcher
    /// needed to resume was compacted away. `changes` is computed by
    /// comparing with the previous topology.
    Resync,
    /// A manual [`reload`](super::TopologyWatcher::reload).
    Reload,
}

/// One topology installed in the router, as subscribers see it.
#[derive(Clone, Debug)]
pub struct TopologyUpdate {
    /// The topology's epoch (equal to `topology.epoch`).
    pub epoch: Epoch,
    /// The whole topology at this epoch.
    pub topology: Arc<Topology>,
    /// For each keyspace, the epoch of its last modification, when the
    /// source reports it (a store does; a file and shardd do not: empty).
    pub versions: BTreeMap<KeyspaceName, Epoch>,
    /// The keyspaces that changed since the previous update that
    /// subscribers received. Sorted by keyspace for computed changes.
    pub changes: Vec<Change>,
    /// Why it was installed.
    pub kind: UpdateKind,
    /// Wall-clock time at which the watcher received it: compare with the
    /// time of the write to measure propagation across processes.
    pub received_at: SystemTime,
    /// The same moment on this process's monotonic clock.
    pub received: Instant,
}

impl TopologyUpdate {
    /// The update a lazily started watcher shows before its first load.
    pub(crate) fn placeholder() -> Self {
        TopologyUpdate {
            epoch: Epoch(0),
            topology: Arc::new(Topology::new(PLACEHOLDER_CLUSTER)),
            versions: BTreeMap::new(),
            changes: Vec::new(),
            kind: UpdateKind::Placeholder,
            received_at: SystemTime::now(),
            received: Instant::now(),
        }
    }

    /// Whether this is a real topology, not the placeholder shown before
    /// the first load.
    pub fn is_loaded(&self) -> bool {
        self.kind != UpdateKind::Placeholder
    }
}

/// The cluster name of the placeholder topology.
pub(crate) const PLACEHOLDER_CLUSTER: &str = "unloaded";

/// The keyspaces created, updated and deleted from `old` to `new`, sorted by
/// name. Uses the versions when both sides have them (a keyspace rewritten
/// with identical content still counts as updated), else compares content.
pub(crate) fn diff(
    old: &Topology,
    old_versions: &BTreeMap<KeyspaceName, Epoch>,
    new: &Topology,
    new_versions: &BTreeMap<KeyspaceName, Epoch>,
) -> Vec<Change> {
    let by_version = !old_versions.is_empty() && !new_versions.is_empty();
    let mut changes = Vec::new();
    let mut names: Vec<&KeyspaceName> = old.keyspaces.keys().chain(new.keyspaces.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        match (old.keyspaces.get(name), new.keyspaces.get(name)) {
            (None, Some(_)) => changes.push(Change::KeyspaceCreated(name.clone())),
            (Some(_), None) => changes.push(Change::KeyspaceDeleted(name.clone())),
            (Some(before), Some(after)) => {
                let changed = if by_version {
                    old_versions.get(name) != new_versions.get(name) || before != after
                } else {
                    before != after
                };
                if changed {
                    changes.push(Change::KeyspaceUpdated(name.clone()));
                }
            }
            (None, None) => {}
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(keyspaces: &[(&str, &str)]) -> Topology {
        let mut text = String::from("cluster = \"c\"\n");
        for (name, primary) in keyspaces {
            text.push_str(&format!(
                "[keyspaces.{name}]\nshards = [{{ id = \"s0\", primary = \"{primary}\" }}]\npartitioning = {{ algorithm = \"jump\" }}\n"
            ));
        }
        Topology::from_toml(&text).unwrap()
    }

    fn name(s: &str) -> KeyspaceName {
        KeyspaceName::new(s).unwrap()
    }

    #[test]
    fn diff_by_content_names_each_kind_of_change_in_order() {
        let old = topology(&[("a", "db://a"), ("b", "db://b"), ("c", "db://c")]);
        let new = topology(&[("b", "db://b2"), ("c", "db://c"), ("d", "db://d")]);
        let none = BTreeMap::new();
        assert_eq!(
            diff(&old, &none, &new, &none),
            vec![
                Change::KeyspaceDeleted(name("a")),
                Change::KeyspaceUpdated(name("b")),
                Change::KeyspaceCreated(name("d")),
            ]
        );
        assert!(diff(&new, &none, &new, &none).is_empty());
    }

    #[test]
    fn diff_by_version_sees_identical_rewrites() {
        let t = topology(&[("a", "db://a")]);
        let v1 = BTreeMap::from([(name("a"), Epoch(3))]);
        let v2 = BTreeMap::from([(name("a"), Epoch(9))]);
        assert_eq!(diff(&t, &v1, &t, &v2), vec![Change::KeyspaceUpdated(name("a"))]);
        assert!(diff(&t, &v1, &t, &v1).is_empty());
    }
}
