//! Free loopback ports for servers.
//!
//! A port is picked by binding `127.0.0.1:0` and closing the socket again, so
//! another process may take it before our server binds it. Two measures keep
//! that rare and harmless: this process never hands out the same port twice,
//! and the fixtures start a server again on new ports when it reports
//! "address already in use".

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

use crate::error::{FixtureError, Result};

/// Returns a TCP port on 127.0.0.1 that was free a moment ago and that this
/// process has not handed out before.
pub fn free_port() -> Result<u16> {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(Default::default);
    for _ in 0..100 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| FixtureError::io("binding 127.0.0.1:0 to find a free port", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| FixtureError::io("reading the address of a listener on 127.0.0.1:0", e))?
            .port();
        drop(listener);
        if handed_out.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(port) {
            return Ok(port);
        }
    }
    Err(FixtureError::Usage("found no free port on 127.0.0.1 in 100 tries that was not handed out before".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_hands_out_a_port_twice() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        assert!(ports.iter().all(|&p| p != 0));
    }
}
