//! Completing password-less DSNs before connecting.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::id::{KeyspaceName, ShardId};
use crate::topology::Dsn;

type Lookup = dyn Fn(&KeyspaceName, &ShardId, &Dsn) -> Option<String> + Send + Sync;

/// Supplies the password of a shard's DSN when the topology stores it
/// without one.
///
/// The password is inserted into the DSN's user info (`scheme://user@host/…`
/// becomes `scheme://user:PASSWORD@host/…`, percent-encoded) only if the DSN
/// names a user and has no password yet; other DSNs are used as they are.
/// The completed DSN is handed to sqlx only, never logged or shown.
///
/// ```
/// use shardlib::sql::Credentials;
/// let by_shard = Credentials::from_fn(|_keyspace, shard, _dsn| {
///     std::env::var(format!("SHARD_{}_PASSWORD", shard.as_str().to_uppercase())).ok()
/// });
/// let everywhere = Credentials::env("PGPASSWORD");
/// # let _ = (by_shard, everywhere);
/// ```
#[derive(Clone, Default)]
pub struct Credentials {
    lookup: Option<Arc<Lookup>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.lookup.is_some() { "Credentials(hook)" } else { "Credentials(none)" })
    }
}

impl Credentials {
    /// DSNs are used as the topology stores them.
    pub fn none() -> Self {
        Credentials::default()
    }

    /// Asks `lookup` for the password of each shard DSN (primary and replicas).
    pub fn from_fn(lookup: impl Fn(&KeyspaceName, &ShardId, &Dsn) -> Option<String> + Send + Sync + 'static) -> Self {
        Credentials { lookup: Some(Arc::new(lookup)) }
    }

    /// One password per shard id.
    pub fn passwords(passwords: HashMap<ShardId, String>) -> Self {
        Credentials::from_fn(move |_, shard, _| passwords.get(shard).cloned())
    }

    /// The same password for every shard, read from environment variable
    /// `var` (e.g. `PGPASSWORD`) each time a pool is opened.
    pub fn env(var: impl Into<String>) -> Self {
        let var = var.into();
        Credentials::from_fn(move |_, _, _| std::env::var(&var).ok())
    }

    /// The DSN to connect with.
    pub(crate) fn complete(&self, keyspace: &KeyspaceName, shard: &ShardId, dsn: &Dsn) -> String {
        let raw = dsn.expose();
        let Some(lookup) = &self.lookup else { return raw.to_owned() };
        let Some(insert_at) = password_slot(raw) else { return raw.to_owned() };
        match lookup(keyspace, shard, dsn) {
            Some(password) => format!("{}:{}{}", &raw[..insert_at], percent_encode(&password), &raw[insert_at..]),
            None => raw.to_owned(),
        }
    }
}

/// Where `:password` goes in a URL DSN that has a user and no password.
fn password_slot(dsn: &str) -> Option<usize> {
    let start = dsn.find("://")? + 3;
    let rest = &dsn[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let at = authority.rfind('@')?;
    let userinfo = &authority[..at];
    (!userinfo.is_empty() && !userinfo.contains(':')).then_some(start + at)
}

fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_only_password_less_urls_with_a_user() {
        let ks = KeyspaceName::new("users").unwrap();
        let s0 = ShardId::new("s0").unwrap();
        let creds = Credentials::from_fn(|_, _, _| Some("p@ss word".into()));
        let complete = |dsn: &str| creds.complete(&ks, &s0, &Dsn::new(dsn));
        assert_eq!(complete("postgres://app@db0:5432/users"), "postgres://app:p%40ss%20word@db0:5432/users");
        assert_eq!(complete("postgres://app:old@db0/users"), "postgres://app:old@db0/users");
        assert_eq!(complete("postgres://db0/users"), "postgres://db0/users");
        assert_eq!(complete("sqlite:///tmp/s0.db"), "sqlite:///tmp/s0.db");
        assert_eq!(Credentials::none().complete(&ks, &s0, &Dsn::new("postgres://app@db0/u")), "postgres://app@db0/u");
    }
}
