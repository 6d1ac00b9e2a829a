//! Where each item lives under the cluster's prefix (see the module docs of
//! [`super`] for the whole layout).

use crate::id::KeyspaceName;

/// The keys of one cluster, all under `/<cluster>/`.
#[derive(Clone, Debug)]
pub(super) struct Layout {
    root: String,
}

/// A key of the topology, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TopologyKey {
    /// `/<cluster>/keyspaces/<keyspace>`: a keyspace's meta document.
    Meta(KeyspaceName),
    /// `/<cluster>/ranges/<keyspace>/<generation>/@<boundary>`: a chunk.
    Chunk {
        /// The keyspace.
        keyspace: KeyspaceName,
        /// The generation, 16 hex digits.
        generation: String,
        /// The chunk's lower boundary (bytes).
        boundary: Vec<u8>,
    },
}

impl Layout {
    /// The layout of `cluster` (a valid name, so free of `/`).
    pub(super) fn new(cluster: &str) -> Self {
        Layout { root: format!("/{cluster}/") }
    }

    /// `/<cluster>/`: everything of the cluster.
    pub(super) fn root(&self) -> &str {
        &self.root
    }

    /// `/<cluster>/keyspaces/`: every keyspace's meta document.
    pub(super) fn metas(&self) -> String {
        format!("{}keyspaces/", self.root)
    }

    /// `/<cluster>/keyspaces/<keyspace>`.
    pub(super) fn meta(&self, keyspace: &KeyspaceName) -> String {
        format!("{}keyspaces/{keyspace}", self.root)
    }

    /// `/<cluster>/ranges/`: every chunk of every keyspace.
    pub(super) fn all_ranges(&self) -> String {
        format!("{}ranges/", self.root)
    }

    /// `/<cluster>/ranges/<keyspace>/`: every generation of a keyspace.
    pub(super) fn ranges(&self, keyspace: &KeyspaceName) -> String {
        format!("{}ranges/{keyspace}/", self.root)
    }

    /// `/<cluster>/ranges/<keyspace>/<generation>/`.
    pub(super) fn generation(&self, keyspace: &KeyspaceName, generation: &str) -> String {
        format!("{}ranges/{keyspace}/{generation}/", self.root)
    }

    /// `/<cluster>/ranges/<keyspace>/<generation>/@<boundary in hex>`.
    pub(super) fn chunk(&self, keyspace: &KeyspaceName, generation: &str, boundary: &[u8]) -> String {
        format!("{}@{}", self.generation(keyspace, generation), hex(boundary))
    }

    /// `/<cluster>/docs/<collection>/`.
    pub(super) fn documents(&self, collection: &str) -> String {
        format!("{}docs/{collection}/", self.root)
    }

    /// `/<cluster>/docs/<collection>/<id>`.
    pub(super) fn document(&self, collection: &str, id: &str) -> String {
        format!("{}docs/{collection}/{id}", self.root)
    }

    /// `/<cluster>/clients/`: every client registration.
    pub(super) fn clients(&self) -> String {
        format!("{}clients/", self.root)
    }

    /// `/<cluster>/clients/<id>`.
    pub(super) fn client(&self, id: &str) -> String {
        format!("{}clients/{id}", self.root)
    }

    /// `/<cluster>/<key>`, e.g. a leader's election key
    /// `/<cluster>/leader/<lease id>`.
    pub(super) fn relative(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    /// Parses a key of the topology; `None` for any other key (documents,
    /// leader, clients) or a key this version does not know.
    pub(super) fn parse(&self, key: &[u8]) -> Option<TopologyKey> {
        let rest = std::str::from_utf8(key).ok()?.strip_prefix(self.root.as_str())?;
        if let Some(name) = rest.strip_prefix("keyspaces/") {
            return KeyspaceName::new(name).ok().map(TopologyKey::Meta);
        }
        let mut parts = rest.strip_prefix("ranges/")?.split('/');
        let (keyspace, generation, chunk) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let boundary = unhex(chunk.strip_prefix('@')?)?;
        Some(TopologyKey::Chunk {
            keyspace: KeyspaceName::new(keyspace).ok()?,
            generation: generation.to_owned(),
            boundary,
        })
    }
}

/// The first key after every key that starts with `prefix` (the etcd
/// `range_end` of a prefix). Every prefix used here ends in `/`, which
/// becomes `0`.
pub(super) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Lowercase hex of `bytes`.
pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Bytes of a hex string (either case); `None` unless it has an even
/// number of hex digits.
pub(super) fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let value = |d: u8| (d as char).to_digit(16).map(|v| v as u8);
    digits.chunks_exact(2).map(|pair| Some(value(pair[0])? << 4 | value(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        let layout = Layout::new("prod");
        let users = KeyspaceName::new("users").unwrap();
        assert_eq!(layout.meta(&users), "/prod/keyspaces/users");
        assert_eq!(layout.parse(layout.meta(&users).as_bytes()), Some(TopologyKey::Meta(users.clone())));
        let chunk = layout.chunk(&users, "00000000000000ff", &[0x40, 0x01]);
        assert_eq!(chunk, "/prod/ranges/users/00000000000000ff/@4001");
        let parsed = layout.parse(chunk.as_bytes());
        let expected = TopologyKey::Chunk {
            keyspace: users.clone(),
            generation: "00000000000000ff".into(),
            boundary: vec![0x40, 1],
        };
        assert_eq!(parsed, Some(expected));
        let first = layout.chunk(&users, "00000000000000ff", &[]);
        assert!(first.ends_with("/@"));
        assert!(
            matches!(layout.parse(first.as_bytes()), Some(TopologyKey::Chunk { boundary, .. }) if boundary.is_empty())
        );
        let others = [
            "/prod/leader",
            "/prod/leader/694d7a3c1f2e0b11",
            "/prod/docs/jobs/a",
            "/prod/clients/users-api-1",
            "/other/keyspaces/users",
        ];
        for other in others.into_iter().chain(["/prod/ranges/users/g/x"]) {
            assert_eq!(layout.parse(other.as_bytes()), None, "{other}");
        }
        assert_eq!(prefix_end("/prod/"), b"/prod0");
        assert_eq!(unhex(&hex(&[0, 0xab, 0xff])), Some(vec![0, 0xab, 0xff]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
