//! Database connection strings that never leak their password.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A database connection string (a URL such as
/// `postgres://app:secret@db1:5432/users`, or a key/value string such as
/// `host=db1 user=app password=secret`).
///
/// `Display` and `Debug` print it with the password replaced by `***`, so a
/// `Dsn` can go into logs, API answers and CLI tables safely. Only
/// [`Dsn::expose`] returns the real string, for opening connections; and
/// serde writes the real string, for the topology store.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Dsn(String);

impl Dsn {
    /// Wraps a connection string.
    pub fn new(dsn: impl Into<String>) -> Self {
        Dsn(dsn.into())
    }

    /// The connection string with its password, for opening a connection.
    /// Never log what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the string is empty or blank.
    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
    }

    /// The connection string with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl fmt::Display for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dsn({:?})", self.redacted())
    }
}

/// Replaces the password in a URL (`scheme://user:PASSWORD@host`) and in
/// key/value or query parameters (`password=…`, `pass=…`, `pwd=…`, `sslpassword=…`).
pub fn redact(dsn: &str) -> String {
    let mut out = redact_userinfo(dsn);
    for key in ["password", "sslpassword", "pass", "pwd"] {
        out = redact_parameter(&out, key);
    }
    out
}

fn redact_userinfo(dsn: &str) -> String {
    let Some(scheme_end) = dsn.find("://") else {
        return dsn.to_owned();
    };
    let rest = &dsn[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    // The last '@' ends the user info: passwords may contain '@' unescaped.
    let Some(at) = authority.rfind('@') else {
        return dsn.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return dsn.to_owned();
    };
    format!("{}{}:***{}", &dsn[..scheme_end + 3], &userinfo[..colon], &dsn[scheme_end + 3 + at..])
}

fn redact_parameter(dsn: &str, key: &str) -> String {
    let mut out = String::with_capacity(dsn.len());
    let mut rest = dsn;
    while let Some(pos) = find_parameter(rest, key) {
        let value_start = pos + key.len() + 1;
        out.push_str(&rest[..value_start]);
        out.push_str("***");
        let value = &rest[value_start..];
        let value_len = if let Some(quoted) = value.strip_prefix('\'') {
            quoted.find('\'').map_or(value.len(), |end| end + 2)
        } else {
            value.find([' ', '&', ';']).unwrap_or(value.len())
        };
        rest = &value[value_len..];
    }
    out.push_str(rest);
    out
}

/// Finds `key=` at the start of a parameter (after start, space, '?', '&' or ';').
fn find_parameter(s: &str, key: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    let needle = format!("{key}=");
    let mut from = 0;
    while let Some(found) = lower[from..].find(&needle) {
        let pos = from + found;
        let at_boundary = pos == 0 || matches!(s.as_bytes()[pos - 1], b' ' | b'?' | b'&' | b';');
        if at_boundary {
            return Some(pos);
        }
        from = pos + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let cases = [
            ("postgres://app:s3cret@db1:5432/users", "postgres://app:***@db1:5432/users"),
            ("postgres://app:p@ss@db1/users?sslmode=require", "postgres://app:***@db1/users?sslmode=require"),
            ("postgres://app@db1/users", "postgres://app@db1/users"),
            ("sqlite:///tmp/shard-0.db", "sqlite:///tmp/shard-0.db"),
            ("host=db1 user=app password=s3cret dbname=x", "host=db1 user=app password=*** dbname=x"),
            ("host=db1 password='a b c' dbname=x", "host=db1 password=*** dbname=x"),
            ("mysql://db1/x?user=app&password=s3cret&tls=true", "mysql://db1/x?user=app&password=***&tls=true"),
            ("host=db1 Password=s3cret", "host=db1 Password=***"),
        ];
        for (raw, shown) in cases {
            let dsn = Dsn::new(raw);
            assert_eq!(dsn.to_string(), shown, "{raw}");
            assert!(!format!("{dsn:?}").contains("s3cret"));
            assert_eq!(dsn.expose(), raw);
        }
    }
}
