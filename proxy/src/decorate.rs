//! The last touch every response edge sends gets, whichever path made it:
//! a proxied response (pingora's response phase, `service.rs`), a fresh RAM
//! hit (`caching/fast.rs`), a sliced object (`caching/slice.rs`), and edge's
//! own answers (direct responses, redirects, 4xx/5xx from edge). In order:
//! the route's response header edits (`response_headers`: remove, set,
//! add), then the `RateLimit-Limit`, `-Remaining` and `-Reset` fields of the
//! request's rate-limit decision (draft-ietf-httpapi-ratelimit-headers).
//! Like HAProxy's `http-after-response`, the edits apply to every status.

use pingora_error::Result;
use pingora_http::ResponseHeader;

use crate::ratelimit::Decision;
use crate::route::CompiledHeaderOps;

/// What a request adds to every response it gets.
#[derive(Clone, Copy, Default)]
pub(crate) struct Decor<'a> {
    /// The route's response header edits (none before a route is known).
    pub ops: Option<&'a CompiledHeaderOps>,
    /// The rate-limit decision the request passed with.
    pub rate_limit: Option<&'a Decision>,
}

impl Decor<'_> {
    /// Nothing to add: a request refused before it has a route.
    pub(crate) const NONE: Decor<'static> = Decor {
        ops: None,
        rate_limit: None,
    };

    /// Applies the edits, then the rate-limit fields.
    pub(crate) fn apply(&self, resp: &mut ResponseHeader) -> Result<()> {
        if let Some(ops) = self.ops {
            apply_response_ops(resp, ops)?;
        }
        if let Some(d) = self.rate_limit {
            for (name, value) in d.headers() {
                resp.insert_header(name, value)?;
            }
        }
        Ok(())
    }
}

/// A route's response header edits: remove, then set, then add.
pub(crate) fn apply_response_ops(resp: &mut ResponseHeader, ops: &CompiledHeaderOps) -> Result<()> {
    for name in &ops.remove {
        resp.remove_header(name);
    }
    for (name, value) in &ops.set {
        resp.insert_header(name.clone(), value.clone())?;
    }
    for (name, value) in &ops.add {
        resp.append_header(name.clone(), value.clone())?;
    }
    Ok(())
}

/// Takes back the route's `add` edits from an answer of the shield tier
/// (another edge with the same routes, which made them already): this node
/// makes them again on every response, so they would appear twice. One
/// occurrence each, the last (the shield appends after the origin's own).
pub(crate) fn undo_shield_adds(resp: &mut ResponseHeader, ops: &CompiledHeaderOps) -> Result<()> {
    for (name, value) in &ops.add {
        let mut values: Vec<http::HeaderValue> =
            resp.headers.get_all(name).iter().cloned().collect();
        let Some(last) = values.iter().rposition(|v| v == value) else {
            continue;
        };
        values.remove(last);
        resp.remove_header(name);
        for v in values {
            resp.append_header(name.clone(), v)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shield_add_is_taken_back_once_and_others_are_kept() {
        let name = http::HeaderName::from_static("x-added");
        let ops = CompiledHeaderOps {
            remove: Vec::new(),
            set: Vec::new(),
            add: vec![(name.clone(), http::HeaderValue::from_static("edge"))],
        };
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("x-added", "origin").unwrap();
        resp.append_header("x-added", "edge").unwrap();
        undo_shield_adds(&mut resp, &ops).unwrap();
        let left: Vec<_> = resp.headers.get_all("x-added").iter().cloned().collect();
        assert_eq!(left, ["origin"]);
        // Nothing of the shield's: nothing taken.
        undo_shield_adds(&mut resp, &ops).unwrap();
        assert_eq!(resp.headers.get_all("x-added").iter().count(), 1);
        apply_response_ops(&mut resp, &ops).unwrap();
        let all: Vec<_> = resp.headers.get_all("x-added").iter().cloned().collect();
        assert_eq!(all, ["origin", "edge"]);
    }
}
