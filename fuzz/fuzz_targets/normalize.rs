//! Host and path normalization on arbitrary input: no panic, and
//! normalize(normalize(x)) == normalize(x); a normalized request passes the
//! door unchanged.
#![no_main]

use edge_config::EscapedSlashes;
use edge_proxy::normalize::{self, host, path, PathOptions};
use libfuzzer_sys::fuzz_target;
use pingora_http::RequestHeader;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let opts = PathOptions {
        merge_slashes: flags & 1 == 1,
        escaped_slashes: match flags >> 1 & 3 {
            0 => EscapedSlashes::Keep,
            1 => EscapedSlashes::DecodeAndRedirect,
            _ => EscapedSlashes::Reject,
        },
    };
    let default_port = if flags & 8 == 8 { 443 } else { 80 };

    if let Ok(a) = host::parse(data, default_port) {
        let again =
            host::parse(a.to_header().as_bytes(), default_port).expect("a normalized host parses");
        assert_eq!(again, a);
    }

    let mut raw = vec![b'/'];
    raw.extend_from_slice(data);
    if let Ok(once) = path::normalize(&raw, &opts) {
        assert!(once.path.is_ascii());
        let twice =
            path::normalize(once.path.as_bytes(), &opts).expect("a normalized path is valid");
        assert_eq!(twice.path, once.path);
        assert!(!twice.redirect);
    }

    // The whole door: a request it admits comes out as a fixed point.
    let (target, host_value) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"a.test"[..]),
    };
    let Ok(mut req) = RequestHeader::build("GET", target, None) else {
        return;
    };
    if req.insert_header("host", host_value).is_err() {
        return;
    }
    if normalize::admit(&mut req, flags & 8 == 8, &opts).is_ok() {
        let first = (req.raw_path().to_vec(), req.headers.get("host").cloned());
        normalize::admit(&mut req, flags & 8 == 8, &opts).expect("admitted again");
        assert_eq!(
            first,
            (req.raw_path().to_vec(), req.headers.get("host").cloned())
        );
    }
});
