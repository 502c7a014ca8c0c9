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
