//! Where the topology lives: a [`TopologyStore`] with two backends.
//!
//! - [`EtcdStore`](etcd::EtcdStore) (feature `etcd`): production. The etcd
//!   revision is the topology epoch; every write is one etcd transaction that
//!   compares the written item's `mod_revision` (no lost update) and the
//!   leader key (a deposed leader cannot write). Large keyspaces are split
//!   into chunks so that no request exceeds etcd's 1.5 MiB limit. The key
//!   layout is documented in `docs/ARCHITECTURE.md`.
//! - [`LocalStore`](local::LocalStore): embedded, a JSON file plus an
//!   in-process watch, so that `shardd` runs with no setup at all. Same
//!   semantics: a revision counter, compare-and-set, fencing.
//!
//! Both pass the same test suite (`tests/tests/t10_store.rs`).
//!
//! Besides the topology, a store keeps versioned [`Document`]s (jobs and the
//! like), grants leadership ([`TopologyStore::try_lead`], whose
//! [`Leadership::fence`] fences the leader's writes), keeps [client
//! registrations](clients) that live as long as their holder
//! ([`TopologyStore::register_client`], [`TopologyStore::list_clients`])
//! and forgets old history on request ([`TopologyStore::compact`]).
//!
//! # Epochs and watch events
//!
//! Every write (keyspace, document, leadership) makes a new store revision,
//! the epoch. A [`WatchEvent`] is delivered for each epoch at which a
//! keyspace changed, in order; epochs at which only documents or leadership
//! changed make no watch event (a snapshot read at such an epoch still
//! reports it as its `topology.epoch`). Client registrations are not
//! versioned: in etcd they take revisions like any write, in the local
//! store they take none.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;

use crate::id::{Epoch, InvalidName, KeyspaceName, validate_name};
use crate::topology::{Keyspace, Topology, TopologyError};

pub mod clients;
mod leader;
pub mod local;

pub use clients::{ClientInfo, Registration};
pub use leader::{LeaderInfo, Leadership};

#[cfg(feature = "etcd")]
pub mod etcd;

/// A boxed stream of watch events.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

/// A boxed future, for the trait's methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The whole topology as of one store revision, with the revision at which
/// each keyspace was last modified (what a compare-and-set compares).
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The topology; its `epoch` is the store revision it was read at.
    pub topology: Arc<Topology>,
    /// For each keyspace, the epoch of its last modification.
    pub versions: BTreeMap<KeyspaceName, Epoch>,
}

/// What changed at one epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A keyspace was created.
    KeyspaceCreated(KeyspaceName),
    /// A keyspace's shards, ranges or settings changed.
    KeyspaceUpdated(KeyspaceName),
    /// A keyspace was deleted.
    KeyspaceDeleted(KeyspaceName),
}

/// One step of a watch: the topology after a change, and what changed.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchEvent {
    /// The topology at the new epoch (the complete state, not a delta).
    pub snapshot: Snapshot,
    /// The keyspaces that changed since the previous event.
    pub changes: Vec<Change>,
}

/// Where leadership is recorded, relative to the cluster. In etcd it is the
/// name of the election (`/<cluster>/leader`, see [`etcd::election`]) whose
/// candidates hold the keys `leader/<lease id>`: a leader's fence names its
/// own key. In the local store it is the `key` of every leader's fence.
pub const LEADER_KEY: &str = "leader";

/// The condition a write is fenced by: who may write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fence {
    /// No leadership check (tools, tests, bootstrap of a single-writer setup).
    None,
    /// The write succeeds only while the leader key exists with this create
    /// revision: a leader that lost its lease can no longer write.
    Leader {
        /// The leader key relative to the cluster: in etcd the leader's
        /// election key `leader/<lease id>` (`/<cluster>/leader/<lease id>`),
        /// in the local store [`LEADER_KEY`].
        key: String,
        /// The create revision of that key when leadership was won: the
        /// fencing token.
        token: i64,
    },
}

impl Fence {
    /// A fence on [`LEADER_KEY`] with `token`: the fence of the local
    /// store's leader that won with `token`. (In etcd each leader has a key
    /// of its own: take its fence from [`Leadership::fence`] or
    /// [`LeaderInfo::fence`].)
    pub fn leader(token: i64) -> Self {
        Fence::Leader { key: LEADER_KEY.to_owned(), token }
    }
}

/// The expected state of an item for a compare-and-set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The item must not exist.
    Absent,
    /// The item must exist and have been last modified at this epoch.
    Version(Epoch),
    /// No check (overwrite): only for tools that own the store alone.
    Any,
}

/// A store operation failed. Nothing was written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached (network, process down). Retry later.
    #[error("topology store unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
    },
    /// The item changed since it was read (compare-and-set failed): read it
    /// again, reapply the change, and retry.
    #[error("conflict on {item}: expected {expected}, found {found}")]
    Conflict {
        /// The item, e.g. `keyspace users`.
        item: String,
        /// What the write expected.
        expected: String,
        /// What the store holds.
        found: String,
    },
    /// The writer is not (or no longer) the leader.
    #[error("fenced: this process is not the leader (leader key {key})")]
    Fenced {
        /// The leader key checked.
        key: String,
    },
    /// The requested epoch was compacted away: reload from the latest.
    #[error("epoch {requested} was compacted (oldest available is {oldest})")]
    Compacted {
        /// The epoch asked for.
        requested: Epoch,
        /// The oldest epoch still readable.
        oldest: Epoch,
    },
    /// The item does not exist.
    #[error("{item} not found")]
    NotFound {
        /// The item, e.g. `keyspace users`.
        item: String,
    },
    /// The stored data is invalid or the new data would make it invalid.
    #[error(transparent)]
    Invalid(#[from] TopologyError),
    /// Credentials were refused.
    #[error("topology store refused the credentials: {message}")]
    Unauthorized {
        /// The store's message.
        message: String,
    },
    /// A collection, document id or client id is not a valid name (see
    /// [`validate_name`]).
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// The store cannot be used as configured (etcd: no endpoints, TLS
    /// settings that do not fit the endpoints or that this build cannot
    /// use, unreadable certificate files). Fix the configuration; retrying
    /// does not help.
    #[error("topology store configuration: {message}")]
    Config {
        /// What is wrong, naming the setting or file.
        message: String,
    },
    /// Anything else the backend reported.
    #[error("topology store error: {message}")]
    Backend {
        /// The backend's message.
        message: String,
    },
}

impl StoreError {
    /// Whether retrying the same operation later may succeed (unavailable
    /// store), as opposed to needing a new read (conflict) or a fix (invalid).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

impl Expect {
    /// How the expectation reads in a [`StoreError::Conflict`].
    pub(crate) fn describe(&self) -> String {
        match self {
            Expect::Absent => "absent".to_owned(),
            Expect::Version(epoch) => format!("version {epoch}"),
            Expect::Any => "any version".to_owned(),
        }
    }
}

/// How a found version reads in a [`StoreError::Conflict`].
pub(crate) fn describe_found(found: Option<Epoch>) -> String {
    match found {
        None => "absent".to_owned(),
        Some(epoch) => format!("version {epoch}"),
    }
}

/// Validates a keyspace as the only keyspace of a topology of `cluster`,
/// before any of it is written.
pub(crate) fn validate_keyspace(cluster: &str, name: &KeyspaceName, keyspace: &Keyspace) -> Result<(), StoreError> {
    let mut topology = Topology::new(cluster);
    topology.keyspaces.insert(name.clone(), keyspace.clone());
    topology.validate()?;
    Ok(())
}

/// Checks a document's collection and id: both must be valid names
/// (1 to 64 characters from `[A-Za-z0-9_.-]`, not starting with `.` or `-`).
pub(crate) fn validate_document_path(collection: &str, id: Option<&str>) -> Result<(), StoreError> {
    validate_name("collection", collection)?;
    if let Some(id) = id {
        validate_name("document id", id)?;
    }
    Ok(())
}

/// A versioned document beside the topology (jobs, client registrations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// The document's id within its collection.
    pub id: String,
    /// The JSON value.
    pub value: serde_json::Value,
    /// The epoch of its last modification (for [`Expect::Version`]).
    pub version: Epoch,
}

/// Storage of topologies and of the documents around them.
///
/// Every write is atomic (all of it or nothing), compares the version the
/// caller read ([`Expect`]) and the writer's leadership ([`Fence`]), and
/// returns the new epoch. Reads are consistent snapshots at one epoch.
pub trait TopologyStore: Send + Sync + 'static {
    /// The current topology.
    fn snapshot(&self) -> StoreFuture<'_, Snapshot>;

    /// The topology as it was at `epoch` ([`StoreError::Compacted`] if that
    /// history is gone).
    fn snapshot_at(&self, epoch: Epoch) -> StoreFuture<'_, Snapshot>;

    /// Creates or replaces one keyspace, after validating it (as the only
    /// keyspace of a topology: [`StoreError::Invalid`], nothing written).
    /// Returns the epoch of the write, the keyspace's new version.
    fn put_keyspace<'a>(
        &'a self,
        name: &'a KeyspaceName,
        keyspace: &'a Keyspace,
        expect: Expect,
        fence: &'a Fence,
    ) -> StoreFuture<'a, Epoch>;

    /// Deletes one keyspace. It must exist: [`StoreError::NotFound`] if it
    /// does not (a [`StoreError::Conflict`] when a version was expected, or
    /// with [`Expect::Absent`] when it exists).
    fn delete_keyspace<'a>(
        &'a self,
        name: &'a KeyspaceName,
        expect: Expect,
        fence: &'a Fence,
    ) -> StoreFuture<'a, Epoch>;

    /// Every change after `after`, in order, each as a complete snapshot.
    /// Fails with [`StoreError::Compacted`] when `after` is too old; the
    /// stream ends with an error when the store connection is lost (the
    /// caller reconnects from its last seen epoch).
    ///
    /// One event is delivered per epoch at which a keyspace changed; epochs
    /// that changed only documents or leadership are skipped. `after` may
    /// be `Epoch(0)` (everything since the store was created) or any epoch
    /// not older than the last compaction.
    fn watch(&self, after: Epoch) -> WatchStream;

    /// Forgets the history before `epoch`: afterwards [`snapshot_at`] and
    /// [`watch`] fail with [`StoreError::Compacted`] for older epochs.
    /// `epoch` must not be newer than the current epoch.
    ///
    /// [`snapshot_at`]: TopologyStore::snapshot_at
    /// [`watch`]: TopologyStore::watch
    fn compact(&self, epoch: Epoch) -> StoreFuture<'_, ()>;

    /// Tries once to become the leader, as `candidate` (a name for humans:
    /// host, process id). Returns `None` while another leader holds
    /// leadership. The leadership lasts until it is resigned or dropped, or
    /// until the store stops hearing from this process for `ttl` (etcd: the
    /// lease expires); [`Leadership::lost`] tells when it ends.
    ///
    /// In etcd this takes part in the election shardd campaigns in
    /// ([`etcd::election`]): it wins only when the election has no
    /// candidate, and a shardd member that campaigns later waits for it.
    fn try_lead<'a>(&'a self, candidate: &'a str, ttl: Duration) -> StoreFuture<'a, Option<Leadership>>;

    /// The current leader, if any: in etcd the election's leader, whether
    /// it won through [`TopologyStore::try_lead`] or campaigned (shardd).
    fn leader(&self) -> StoreFuture<'_, Option<LeaderInfo>>;

    /// Reads a document of a collection (`jobs`, `clients`, …). Collections
    /// and ids are names: 1 to 64 characters from `[A-Za-z0-9_.-]`, not
    /// starting with `.` or `-` ([`StoreError::InvalidName`] otherwise).
    fn get_document<'a>(&'a self, collection: &'a str, id: &'a str) -> StoreFuture<'a, Option<Document>>;

    /// Lists the documents of a collection, ordered by id.
    fn list_documents<'a>(&'a self, collection: &'a str) -> StoreFuture<'a, Vec<Document>>;

    /// Writes a document with compare-and-set and fencing.
    fn put_document<'a>(
        &'a self,
        collection: &'a str,
        id: &'a str,
        value: &'a serde_json::Value,
        expect: Expect,
        fence: &'a Fence,
    ) -> StoreFuture<'a, Epoch>;

    /// Deletes a document with compare-and-set and fencing. Like
    /// [`TopologyStore::delete_keyspace`], the document must exist.
    fn delete_document<'a>(
        &'a self,
        collection: &'a str,
        id: &'a str,
        expect: Expect,
        fence: &'a Fence,
    ) -> StoreFuture<'a, Epoch>;

    /// Registers this process as client `id` (a name: 1 to 64 characters
    /// from `[A-Za-z0-9_.-]`) reporting `value`, for as long as the returned
    /// [`Registration`] lives, and at most `ttl` (whole seconds, at least
    /// one) after the process stops renewing it (etcd: a lease; the local
    /// store: an in-process deadline). Replaces a registration of the same
    /// id. Not fenced: any process may register. See [`clients`].
    fn register_client<'a>(
        &'a self,
        id: &'a str,
        value: serde_json::Value,
        ttl: Duration,
    ) -> StoreFuture<'a, Registration>;

    /// The live client registrations, ordered by id.
    fn list_clients(&self) -> StoreFuture<'_, Vec<ClientInfo>>;
}
