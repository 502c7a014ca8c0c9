//! A backend as pingora's connector knows it (`HttpPeer`): the options
//! every attempt starts from, and the plain-HTTP peer made once per
//! backend for the HTTP/1 shortcut's pooled connections.

use std::net::SocketAddr;
use std::time::Duration;

use pingora_core::upstreams::peer::{HttpPeer, Peer};

/// How long a pooled upstream connection may stay idle: 60 seconds (as
/// nginx's `keepalive_timeout` default, longer than HAProxy's 5 s
/// `timeout http-keep-alive`; a backend closing first is caught by the
/// pool's check before reuse).
pub const UPSTREAM_IDLE: Duration = Duration::from_secs(60);

/// A peer for `addr` with pingora's default options but the idle time of
/// [`UPSTREAM_IDLE`]: what every attempt's peer starts from
/// (`service::upstream::peer_for` adds its timeouts, TLS and source
/// address).
pub fn base_peer(addr: SocketAddr, tls: bool, sni: String) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, tls, sni);
    peer.options.idle_timeout = Some(UPSTREAM_IDLE);
    peer
}

/// A backend as a plain-HTTP peer ([`base_peer`] without TLS), made when
/// the pool is built, with its `reuse_hash`: the key its pooled
/// connections are kept under. The HTTP/1 shortcut
/// (`service/lean_pass.rs`) finds and keeps a pooled connection with it,
/// where building an attempt's peer and hashing it twice cost about 790
/// instructions per request (`benches/callgrind/instr.sh`, issue 17). A
/// plain attempt's own peer has the same key: timeouts and the source
/// address are not in the hash.
#[derive(Debug, Clone)]
pub struct PlainPeer {
    pub peer: HttpPeer,
    pub key: u64,
}

impl PlainPeer {
    pub fn new(addr: SocketAddr) -> Self {
        let peer = base_peer(addr, false, String::new());
        let key = peer.reuse_hash();
        PlainPeer { peer, key }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attempt's peer differs from the plain one in what is not hashed
    /// (its timeouts, its source address); the key is the same, so the
    /// shortcut and pingora's path share the backend's pooled connections.
    #[test]
    fn an_attempts_timeouts_and_source_leave_the_key_alone() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().expect("address");
        let plain = PlainPeer::new(addr);
        let mut attempt = base_peer(addr, false, String::new());
        attempt.options.connection_timeout = Some(Duration::from_millis(5));
        attempt.options.total_connection_timeout = Some(Duration::from_millis(10));
        attempt.options.response_header_timeout = Some(Duration::from_secs(1));
        attempt.options.read_timeout = Some(Duration::from_secs(2));
        attempt.options.write_timeout = Some(Duration::from_secs(3));
        let mut bind = pingora_core::connectors::l4::BindTo::default();
        bind.addr = Some("127.0.0.2:0".parse().expect("address"));
        attempt.options.bind_to = Some(bind);
        assert_eq!(attempt.reuse_hash(), plain.key);
        // Another backend, or TLS to the same one, is another key.
        let other: SocketAddr = "127.0.0.1:8081".parse().expect("address");
        assert_ne!(PlainPeer::new(other).key, plain.key);
        assert_ne!(base_peer(addr, true, "a".into()).reuse_hash(), plain.key);
    }
}
