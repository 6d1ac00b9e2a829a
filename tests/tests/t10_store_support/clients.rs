//! The client-registration cases of the store suite (`t10_store.rs` runs
//! each against both backends): registrations bound to a lease (etcd) or
//! an in-process deadline (local store), listed, updated, removed on close
//! and on drop, and expired when their holder dies without a word.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use shardlib::store::{ClientInfo, Expect, Fence, StoreError, TopologyStore};
use shardlib::watch::{Source, TopologyWatcher, WatchOptions};
use shardlib::{Epoch, KeyspaceName};

use super::{STEP_TIMEOUT, SendError, TestResult, keyspace, within};

type Store = Arc<dyn TopologyStore>;

/// A TTL long enough never to expire while a test runs on a loaded machine.
const LONG_TTL: Duration = Duration::from_secs(30);

/// The TTL of registrations whose expiry is awaited.
const SHORT_TTL: Duration = Duration::from_secs(2);

/// Polls the registrations until `done` holds, for at most [`STEP_TIMEOUT`]
/// (plus `ttl`, for expiries); returns them then.
async fn clients_until(
    store: &Store,
    what: &str,
    ttl: Duration,
    done: impl Fn(&[ClientInfo]) -> bool,
) -> Result<Vec<ClientInfo>, SendError> {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT + ttl;
    loop {
        let clients = within(store.list_clients()).await??;
        if done(&clients) {
            return Ok(clients);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{what}: not within {:?}; listed {clients:?}", STEP_TIMEOUT + ttl).into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn ids(clients: &[ClientInfo]) -> Vec<&str> {
    clients.iter().map(|c| c.id.as_str()).collect()
}

pub async fn clients_register_update_list_and_close(store: Store) -> TestResult {
    assert!(store.list_clients().await?.is_empty());
    let api = store.register_client("users-api-1", json!({"epoch": 1}), LONG_TTL).await?;
    assert_eq!((api.id(), api.ttl(), api.is_active()), ("users-api-1", LONG_TTL, true));
    let batch = store.register_client("batch.7", json!({"load": 0.5}), Duration::from_millis(1500)).await?;
    assert_eq!(batch.ttl(), Duration::from_secs(2), "TTLs are whole seconds, rounded up");

    let listed = store.list_clients().await?;
    assert_eq!(ids(&listed), ["batch.7", "users-api-1"], "ordered by id");
    assert_eq!(listed[1].value, json!({"epoch": 1}));
    assert_eq!(listed[1].ttl, LONG_TTL);
    let written = listed[1].updated_at;

    within(api.update(json!({"epoch": 7, "load": 0.25}))).await??;
    let listed = store.list_clients().await?;
    assert_eq!(listed[1].value, json!({"epoch": 7, "load": 0.25}));
    assert!(listed[1].updated_at >= written);

    // Registrations are not topology: no keyspace, no watch event.
    assert!(store.snapshot().await?.topology.keyspaces.is_empty());

    within(api.close()).await??;
    assert_eq!(ids(&store.list_clients().await?), ["batch.7"], "close removes at once");
    // Dropped without close: removed in the background.
    drop(batch);
    clients_until(&store, "a dropped registration goes", Duration::ZERO, <[_]>::is_empty).await?;

    let result = store.register_client("a/b", json!(null), LONG_TTL).await;
    assert!(matches!(result, Err(StoreError::InvalidName(_))), "{result:?}");
    Ok(())
}

pub async fn clients_expire_when_their_holder_dies(store: Store) -> TestResult {
    // The holder lives in a runtime of its own; shutting that runtime down
    // stops its keeper without a word, as a killed process would.
    let holder = store.clone();
    let registered = tokio::task::spawn_blocking(move || -> Result<(), SendError> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let registration = runtime.block_on(holder.register_client("doomed", json!({"epoch": 3}), SHORT_TTL))?;
        // The runtime dies under the registration, which is neither closed
        // nor dropped before: nothing removes it.
        runtime.shutdown_background();
        drop(registration);
        Ok(())
    });
    within(registered).await???;
    let survivor = store.register_client("survivor", json!({}), LONG_TTL).await?;
    let listed = clients_until(&store, "the dead holder's registration expires", SHORT_TTL, |clients| {
        ids(clients) == ["survivor"]
    })
    .await?;
    assert!(survivor.is_active());
    assert_eq!(listed[0].id, "survivor");
    within(survivor.close()).await??;
    Ok(())
}

pub async fn clients_replaced_registrations_stay_with_the_new_holder(store: Store) -> TestResult {
    let old = store.register_client("svc-1", json!({"holder": "old"}), LONG_TTL).await?;
    // A restarted process takes its id over at once.
    let new = store.register_client("svc-1", json!({"holder": "new"}), LONG_TTL).await?;
    let listed = store.list_clients().await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].value, json!({"holder": "new"}));
    // The old holder's close leaves the new registration alone.
    within(old.close()).await??;
    let listed = store.list_clients().await?;
    assert_eq!(listed.iter().map(|c| &c.value).collect::<Vec<_>>(), [&json!({"holder": "new"})]);
    within(new.close()).await??;
    assert!(store.list_clients().await?.is_empty());
    Ok(())
}

pub async fn clients_watchers_register_and_report_their_epoch(store: Store) -> TestResult {
    let options = WatchOptions { register_as: Some("users-api-1".into()), ..WatchOptions::named("users-api") };
    let watcher = within(TopologyWatcher::start(Source::Store(store.clone()), options)).await??;
    let users = KeyspaceName::new("users")?;
    let epoch = store.put_keyspace(&users, &keyspace(2, 4), Expect::Absent, &Fence::None).await?;
    let reported = |clients: &[ClientInfo]| {
        clients.iter().any(|c| c.id == "users-api-1" && c.value["epoch"].as_u64() == Some(epoch.0))
    };
    let listed = clients_until(&store, "the watcher reports the new epoch", Duration::ZERO, reported).await?;
    assert_eq!(listed[0].value, json!({"watcher": "users-api", "epoch": epoch.0}));
    assert!(watcher.epoch() >= Epoch(epoch.0));
    within(watcher.shutdown()).await?;
    assert!(store.list_clients().await?.is_empty(), "a watcher that shuts down removes its registration");

    // Only a store can hold the registration.
    let options = WatchOptions { register_as: Some("x".into()), ..WatchOptions::default() };
    let result = TopologyWatcher::start(Source::file("/nonexistent.toml"), options).await;
    assert!(result.is_err_and(|e| e.to_string().contains("register_as needs a store source")));
    Ok(())
}

/// etcd only: a registration whose lease is lost while etcd is down comes
/// back, with the value given meanwhile, once etcd answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_registrations_come_back_after_an_outage() -> TestResult {
    let (store, mut etcd) = super::etcd_store().await?;
    let store: Store = Arc::new(store);
    let registration = store.register_client("svc-1", json!({"epoch": 1}), SHORT_TTL).await?;
    let mut etcd = tokio::task::spawn_blocking(move || etcd.kill().map(|()| etcd)).await??;

    // No keep-alive is answered: within the TTL the keeper knows it lost
    // the lease. An update meanwhile fails, but is kept.
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while registration.is_active() {
        assert!(tokio::time::Instant::now() < deadline, "the lost lease was not noticed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let result = within(registration.update(json!({"epoch": 2}))).await?;
    assert!(matches!(result, Err(StoreError::Unavailable { .. })), "{result:?}");

    let etcd = tokio::task::spawn_blocking(move || etcd.restart().map(|()| etcd)).await??;
    let back = |clients: &[ClientInfo]| {
        ids(clients) == ["svc-1"] && clients[0].value == json!({"epoch": 2}) && registration.is_active()
    };
    clients_until(&store, "the registration comes back with the latest value", SHORT_TTL, back).await?;
    within(registration.close()).await??;
    assert!(store.list_clients().await?.is_empty());
    drop(etcd);
    Ok(())
}
