//! W3C Trace Context (`traceparent`, `tracestate`): edge takes part in a
//! trace as one hop, as Envoy and Traefik do. A request whose
//! `traceparent` is valid keeps its trace id and flags, and goes upstream
//! with edge's own span id as the parent (its `tracestate` passed on
//! unchanged); a request without one, or with one edge cannot parse,
//! starts a new trace (sampled at `server.otlp.sample_ratio` when spans are
//! exported, else not) and loses its
//! `tracestate` (§3.3: a vendor that fails to parse `traceparent` must not
//! use `tracestate`). The trace id goes in the access log, so a request
//! is found by it in every tier's logs.
//!
//! Parsing follows §3.2: `version-traceid-parentid-flags` in lower-case
//! hex; version `ff` is invalid; version `00` is exactly 55 characters; a
//! later version may append fields after a `-` and is read as `00` is;
//! all-zero trace or parent ids are invalid; several `traceparent` fields
//! are invalid. What edge sends is always version `00`.

use pingora_http::RequestHeader;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// A trace context as edge passes it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// Edge's span: the parent of the request it sends upstream.
    pub span_id: [u8; 8],
    /// The client's span (the incoming `traceparent`'s parent id).
    pub parent_id: Option<[u8; 8]>,
    pub flags: u8,
}

/// The `sampled` bit of trace-flags (§3.2.2.5).
pub const SAMPLED: u8 = 0x01;

fn hex_lower(text: &[u8], out: &mut [u8]) -> Option<()> {
    if text.len() != out.len() * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (i, pair) in text.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(())
}

/// The trace id, parent id and flags of a `traceparent` value, if it is
/// valid (W3C Trace Context §3.2).
pub fn parse(value: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    // version(2) - trace-id(32) - parent-id(16) - flags(2) = 55 bytes.
    if value.len() < 55 {
        return None;
    }
    let mut version = [0u8; 1];
    hex_lower(&value[0..2], &mut version)?;
    if version[0] == 0xff || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    // Version 00 is exactly this long; a later one may go on after a `-`.
    if version[0] == 0 && value.len() != 55 {
        return None;
    }
    if value.len() > 55 && value[55] != b'-' {
        return None;
    }
    let mut trace_id = [0u8; 16];
    hex_lower(&value[3..35], &mut trace_id)?;
    let mut parent = [0u8; 8];
    hex_lower(&value[36..52], &mut parent)?;
    let mut flags = [0u8; 1];
    hex_lower(&value[53..55], &mut flags)?;
    if trace_id == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace_id, parent, flags[0]))
}

fn random_nonzero<const N: usize>() -> [u8; N] {
    loop {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let r = fastrand::u64(..).to_be_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        if out != [0u8; N] {
            return out;
        }
    }
}

impl TraceContext {
    /// The `traceparent` value edge sends: version 00, edge's span as parent.
    pub fn header(&self) -> String {
        ascii_string(&self.header_bytes())
    }

    /// [`Self::header`] as its 55 ASCII bytes.
    pub fn header_bytes(&self) -> [u8; 55] {
        let mut out = [0u8; 55];
        out[..3].copy_from_slice(b"00-");
        hex_into(&mut out[3..35], &self.trace_id);
        out[35] = b'-';
        hex_into(&mut out[36..52], &self.span_id);
        out[52] = b'-';
        hex_into(&mut out[53..55], &[self.flags]);
        out
    }

    /// Whether spans of this trace are recorded.
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The trace id as 32 lower-case hex digits (as logs show it).
    pub fn trace_id_hex(&self) -> String {
        let mut out = [0u8; 32];
        hex_into(&mut out, &self.trace_id);
        ascii_string(&out)
    }
}

/// Writes `bytes` as lower-case hex digits into `out` (two per byte; `out`
/// is at least twice as long as `bytes`). Indexed writes into a buffer of
/// known size, each byte's two digits taken from a table at once: pushing
/// digit by digit onto a `Vec` cost about 500 instructions per request for
/// the trace and request ids (benches/RESULTS.md), a digit at a time from
/// a table of 16 about 100 more than pairs (issue 17).
pub(crate) fn hex_into(out: &mut [u8], bytes: &[u8]) {
    static PAIRS: [[u8; 2]; 256] = {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut pairs = [[0u8; 2]; 256];
        let mut b = 0;
        while b < 256 {
            pairs[b] = [DIGITS[b >> 4], DIGITS[b & 0x0f]];
            b += 1;
        }
        pairs
    };
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&PAIRS[usize::from(*b)]);
    }
}

/// `bytes`, written by this module as ASCII, as a `String`.
pub(crate) fn ascii_string(bytes: &[u8]) -> String {
    std::str::from_utf8(bytes).unwrap_or_default().to_owned()
}

/// Continues the request's trace or starts one; [`TraceContext::stamp`]
/// writes it on what edge sends on. A new trace is sampled with
/// probability `sample_new` (none: never).
pub fn continue_or_start(req: &RequestHeader, sample_new: Option<f64>) -> TraceContext {
    let mut values = crate::names::values(&req.headers, crate::names::TRACEPARENT);
    let incoming = match (values.next(), values.next()) {
        (Some(v), None) => parse(v.as_bytes()),
        _ => None,
    };
    match incoming {
        Some((trace_id, parent, flags)) => TraceContext {
            trace_id,
            span_id: random_nonzero(),
            parent_id: Some(parent),
            flags,
        },
        None => {
            let sampled = sample_new.is_some_and(|r| r > 0.0 && fastrand::f64() < r);
            TraceContext {
                trace_id: random_nonzero(),
                span_id: random_nonzero(),
                parent_id: None,
                flags: if sampled { SAMPLED } else { 0 },
            }
        }
    }
}

impl TraceContext {
    /// Rewrites the request's `traceparent` with edge's span as the
    /// parent, and drops its `tracestate` when the trace restarted (§3.3),
    /// for everything edge sends on (upstream, subrequests).
    pub fn stamp(&self, req: &mut RequestHeader) {
        if self.parent_id.is_none() {
            req.remove_header(&crate::names::TRACESTATE);
        }
        // The value is ASCII hex and dashes: always a valid header value.
        let _ = req.insert_header(crate::names::TRACEPARENT, self.header());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// The context, and the request as edge sends it on.
    fn continue_or_start(r: &mut RequestHeader, ratio: Option<f64>) -> TraceContext {
        let ctx = super::continue_or_start(r, ratio);
        ctx.stamp(r);
        ctx
    }

    fn req(parents: &[&str], state: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for p in parents {
            r.append_header(TRACEPARENT, *p).unwrap();
        }
        if let Some(s) = state {
            r.append_header(TRACESTATE, s).unwrap();
        }
        r
    }

    fn sent(r: &RequestHeader) -> String {
        let values: Vec<_> = r.headers.get_all(TRACEPARENT).iter().collect();
        assert_eq!(values.len(), 1);
        values[0].to_str().unwrap().to_string()
    }

    #[test]
    fn a_valid_parent_is_continued_with_edges_span() {
        let mut r = req(&[VALID], Some("congo=t61rcWkgMzE"));
        let ctx = continue_or_start(&mut r, None);
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.flags, 1);
        let out = sent(&r);
        assert_eq!(out.len(), 55);
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-01"));
        assert_ne!(
            &out[36..52],
            "00f067aa0ba902b7",
            "edge's span is the new parent"
        );
        assert_ne!(&out[36..52], "0000000000000000");
        assert_eq!(parse(out.as_bytes()), Some((ctx.trace_id, ctx.span_id, 1)));
        assert_eq!(
            ctx.parent_id,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]),
            "the client's span is kept as the parent"
        );
        assert_eq!(
            r.headers.get(TRACESTATE).unwrap().to_str().unwrap(),
            "congo=t61rcWkgMzE",
            "tracestate passes unchanged"
        );
    }

    #[test]
    fn a_later_version_is_read_as_00_and_sent_as_00() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-the-future-says";
        assert!(parse(later.as_bytes()).is_some());
        let mut r = req(&[later], Some("a=b"));
        let ctx = continue_or_start(&mut r, None);
        assert_eq!(ctx.flags, 9);
        assert!(sent(&r).starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(r.headers.get(TRACESTATE).is_some());
    }

    #[test]
    fn anything_invalid_starts_a_new_trace_without_tracestate() {
        let invalid = [
            // Upper-case hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            // All-zero trace id, all-zero parent id.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Version ff; version 00 with more after it; short; long fields.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e47360-0f067aa0ba902b7-01",
            // A later version glued on without a dash; wrong separators.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            // Not hex; spaces; empty.
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "",
            "zz",
        ];
        for bad in invalid {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?}");
            let mut r = req(&[bad], Some("congo=t61rcWkgMzE"));
            let ctx = continue_or_start(&mut r, None);
            assert_ne!(
                ctx.trace_id_hex(),
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "{bad:?}"
            );
            assert_eq!(
                ctx.flags, 0,
                "a new trace edge does not record is not sampled"
            );
            assert!(parse(sent(&r).as_bytes()).is_some(), "{bad:?}");
            assert!(
                r.headers.get(TRACESTATE).is_none(),
                "{bad:?}: tracestate dropped"
            );
        }
        // Two traceparent fields: which one? Neither.
        let mut r = req(&[VALID, VALID], Some("a=b"));
        let ctx = continue_or_start(&mut r, None);
        assert_ne!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(r.headers.get(TRACESTATE).is_none());
        // None at all: a new trace, one field.
        let mut r = req(&[], None);
        let ctx = continue_or_start(&mut r, None);
        assert_eq!(
            parse(sent(&r).as_bytes()),
            Some((ctx.trace_id, ctx.span_id, 0))
        );
    }

    #[test]
    fn hex_is_what_format_writes() {
        let mut rng = fastrand::Rng::with_seed(7);
        for len in 0..=16 {
            let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let mut out = vec![0u8; 2 * len];
            hex_into(&mut out, &bytes);
            let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(ascii_string(&out), expected);
        }
        let ctx = TraceContext {
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
            parent_id: None,
            flags: 1,
        };
        assert_eq!(
            ctx.header(),
            format!("00-{}-{}-01", "ab".repeat(16), "01".repeat(8))
        );
        assert_eq!(ctx.trace_id_hex(), "ab".repeat(16));
    }

    #[test]
    fn new_ids_differ_and_are_never_zero() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let mut r = req(&[], None);
            let ctx = continue_or_start(&mut r, None);
            assert_ne!(ctx.trace_id, [0; 16]);
            assert_ne!(ctx.span_id, [0; 8]);
            assert!(seen.insert(ctx.trace_id));
        }
    }

    #[test]
    fn new_traces_are_sampled_at_the_ratio_and_continued_ones_keep_their_flag() {
        let sampled = |ratio: Option<f64>| {
            (0..2000)
                .filter(|_| continue_or_start(&mut req(&[], None), ratio).sampled())
                .count()
        };
        assert_eq!(sampled(None), 0);
        assert_eq!(sampled(Some(0.0)), 0);
        assert_eq!(sampled(Some(1.0)), 2000);
        // 0.5 of 2,000: far from both ends (the chance of < 800 is ~1e-19).
        let half = sampled(Some(0.5));
        assert!((800..=1200).contains(&half), "{half}");
        // A sampled new trace says so upstream.
        let mut r = req(&[], None);
        let ctx = continue_or_start(&mut r, Some(1.0));
        assert!(sent(&r).ends_with("-01"));
        assert_eq!(ctx.parent_id, None);
        // A continued trace keeps the client's decision, whatever the ratio.
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(!continue_or_start(&mut req(&[unsampled], None), Some(1.0)).sampled());
        assert!(continue_or_start(&mut req(&[VALID], None), Some(0.0)).sampled());
    }
}
