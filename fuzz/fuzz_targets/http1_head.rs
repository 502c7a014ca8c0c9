//! HTTP/1 framing on arbitrary bytes: no panic, and the answer does not
//! depend on how the bytes were split into reads.
#![no_main]

use edge_proxy::listen::framing::{check, Chunked, HeadScan, Limits, Scan};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_request_line: 512,
    max_header_bytes: 2048,
    max_headers: 16,
};

/// The head's length and verdict, scanning `data` in pieces of `step`.
fn head(data: &[u8], step: usize) -> Option<(usize, bool)> {
    let mut scan = HeadScan::default();
    let mut end = 0;
    loop {
        end = (end + step).min(data.len());
        match scan.scan(&data[..end], &LIMITS) {
            Err(_) => return None,
            Ok(Scan::Complete(n)) => return Some((n, check(&data[..n], &LIMITS).is_ok())),
            Ok(Scan::Partial) if end == data.len() => return Some((0, false)),
            Ok(Scan::Partial) => {}
        }
    }
}

fn chunked(data: &[u8], step: usize) -> Result<(usize, bool), u16> {
    let mut c = Chunked::new(1024);
    let mut used = 0;
    for piece in data.chunks(step.max(1)) {
        let n = c.feed(piece).map_err(|r| r.status)?;
        used += n;
        if c.done() {
            break;
        }
    }
    Ok((used, c.done()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 16) + 1;
    assert_eq!(head(data, data.len().max(1)), head(data, step));
    assert_eq!(chunked(data, data.len().max(1)), chunked(data, step));
});
