//! The HTTP/2 shortcut of fresh RAM hits (issue 17): a `GET`/`HEAD`
//! stream without a body is answered where the connection's task accepted
//! it, with no task of its own unless its body must wait
//! ([`pingora_core::apps::H2Shortcut`], vendored pingora-core thirty-third
//! and thirty-eighth)
//! before pingora builds a proxy session for it, when the request phase
//! would take no step but the cache's and the cache would answer the whole
//! object, a range or a condition from RAM (`caching::fast::map_hit`, the
//! head kept per object for whole answers, as pingora's path keeps it).
//!
//! The stream's request goes through the same door (head limits, `Host`
//! and path normalization), the same route table (looked up from the
//! normalized request, as on pingora's path), the same gate checks as the
//! HTTP/1 shortcut (`lean.rs`), then the same cache plan, directives, key,
//! RAM lookup, segment and playlist checks; it is counted and logged by
//! the same code (`log.rs`). Everything else, and every request on a node
//! that exports trace spans, goes to pingora's path as it came (normalized
//! in place, which the door does again without change).

use super::*;
use crate::to_client::ToClient;
use futures::FutureExt;
use pingora_core::apps::H2Taken;
use pingora_core::protocols::http::v2::server::HttpSession as H2Session;

/// The `sessionless` series of the HTTP/2 shortcut.
const H2_RAM_HIT: usize = 2;

impl EdgeProxy {
    /// [`pingora_core::apps::H2Shortcut`] for edge's listeners, called in
    /// the connection's task where the stream was accepted: the answer to
    /// `stream`'s request when it is a fresh RAM hit, written and logged
    /// here ([`H2Taken::Done`]: the stream needs no task of its own), with
    /// the rest of its body for the stream's task only when it must wait for
    /// the client's window or the connection's buffer ([`H2Taken::Rest`]);
    /// `None`: pingora's path takes the stream.
    pub fn h2_shortcut(
        app: &pingora_proxy::HttpProxy<EdgeProxy>,
        stream: &mut H2Session,
    ) -> Option<H2Taken<pingora_proxy::HttpProxy<EdgeProxy>>> {
        let edge = app.inner();
        let client = stream
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let (hit, done) = edge.h2_hit(stream, client)?;
        // Written here: the rest is handed on (with what it needs moved
        // into it) only when the body must wait.
        let body = match edge.write_h2_head(stream, hit) {
            Ok(Some(body)) => body,
            Ok(None) => {
                edge.shortcut_counted(stream.req_header(), client, done, H2_RAM_HIT, None);
                return Some(H2Taken::Done);
            }
            Err(e) => {
                let cut = Some((e, false, 0));
                edge.shortcut_counted(stream.req_header(), client, done, H2_RAM_HIT, cut);
                return Some(H2Taken::Done);
            }
        };
        // What `write_body` hands to the connection before a wait is
        // counted (`body_bytes_sent`): a wait here gives the rest to the
        // stream's task, nothing twice.
        let before = stream.body_bytes_sent();
        match stream.write_body(body.clone(), true).now_or_never() {
            Some(written) => {
                let cut = written.to_client().err().map(|e| {
                    let sent = (stream.body_bytes_sent() - before).min(body.len());
                    (e, true, sent as u64)
                });
                edge.shortcut_counted(stream.req_header(), client, done, H2_RAM_HIT, cut);
                Some(H2Taken::Done)
            }
            None => {
                let sent = (stream.body_bytes_sent() - before).min(body.len());
                let rest = body.slice(sent..);
                let len = body.len();
                Some(H2Taken::Rest(Box::new(move |app, stream| {
                    Box::pin(
                        app.inner()
                            .write_h2_body(stream, client, rest, done, before, len),
                    )
                })))
            }
        }
    }

    /// The RAM hit for `stream`'s request, or `None` (pingora's path).
    fn h2_hit(
        &self,
        stream: &mut H2Session,
        client: Option<IpAddr>,
    ) -> Option<(H2Hit, ShortcutDone)> {
        if !self.shortcut_possible() || self.proxy.tracing().is_some() || !stream.is_body_done() {
            return None;
        }
        let req = stream.req_header_mut();
        // Framing fields found by one walk of the names, not a hashed
        // probe for each (`names::any_present`).
        static FRAMING: [http::HeaderName; 2] = [
            http::header::CONTENT_LENGTH,
            http::header::TRANSFER_ENCODING,
        ];
        if !matches!(req.method, http::Method::GET | http::Method::HEAD)
            || crate::names::any_present(&req.headers, &FRAMING)
        {
            return None;
        }
        let admitted = self.h2_door(req, client)?;
        // Kept aside without an allocation, for a request left to pingora's
        // path after all (`DoorPassed`).
        let host = smallvec::SmallVec::<[u8; 64]>::from_slice(admitted.ctx.host.as_bytes());
        let authority =
            smallvec::SmallVec::<[u8; 64]>::from_slice(admitted.ctx.authority.as_bytes());
        let hit = self.ram_hit(
            req,
            client,
            admitted,
            None,
            |rt, req, obj, ctx, decor, now| {
                let len = |b: &Option<Bytes>| b.as_ref().map_or(0, |b| b.len() as u64);
                if let Some(hit) = caching::fast::fields_hit(rt, req, obj, ctx, decor, now) {
                    let (status, kind, body_len) = (hit.status.as_u16(), hit.kind, len(&hit.body));
                    return Some((H2Hit::Fields(hit), status, kind, body_len));
                }
                let hit = caching::fast::map_hit(rt, req, obj, ctx, decor, now, true).ok()??;
                let (status, kind, body_len) = (hit.resp.status.as_u16(), hit.kind, len(&hit.body));
                Some((H2Hit::Map(hit), status, kind, body_len))
            },
            |hit, done| (hit, done),
        );
        if hit.is_none() {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            door_passed(req, text(&host), text(&authority));
        }
        hit
    }

    /// The door and the route for an HTTP/2 request, as pingora's path
    /// takes them (`limits.rs`'s `admit`, `request.rs`'s route), then the
    /// shortcut's gate; `None` for anything the door refuses or the
    /// shortcut does not answer (pingora's path answers it).
    fn h2_door(&self, req: &mut RequestHeader, client: Option<IpAddr>) -> Option<lean::Admitted> {
        if guard::check_head(req, &self.limits).is_some() {
            return None;
        }
        // A refusal changes nothing: pingora's path refuses it the same.
        let admitted = normalize::admit(req, self.tls, &self.paths).ok()?;
        let mut ctx = Box::new(RequestCtx::new());
        ctx.host = admitted.authority.map(|a| a.host).unwrap_or_default();
        ctx.authority = admitted.header;
        let state = self.proxy.state();
        let acme = !self.tls
            && req
                .uri
                .path()
                .starts_with(crate::listen::acme::HTTP01_PREFIX);
        let taken = (!acme)
            .then(|| self.route_of(req, &ctx.host, &state))
            .flatten()
            .filter(|r| r.shortcut)
            .and_then(|route| Some((lean::shortcut_gate(req, client, &state, &route)?, route)));
        let Some((pool, route)) = taken else {
            door_passed(
                req,
                std::mem::take(&mut ctx.host),
                std::mem::take(&mut ctx.authority),
            );
            return None;
        };
        Some(lean::Admitted {
            ctx,
            state,
            route,
            pool,
        })
    }

    /// Writes `hit`'s head on the stream as pingora's path writes a RAM
    /// hit's (`Date` where the head has none, no connection-specific
    /// fields; the body's waits for the client's window bounded by the
    /// listener's `send_timeout`); the body to write after it, if any. Errors
    /// as pingora's path makes them (`to_client.rs`).
    fn write_h2_head(&self, stream: &mut H2Session, hit: H2Hit) -> Result<Option<Bytes>> {
        stream.set_write_timeout(Some(self.limits.send_timeout));
        let (written, body) = match hit {
            H2Hit::Map(hit) => {
                let end = hit.body.is_none();
                (
                    stream.write_response_header(Box::new(hit.resp), end),
                    hit.body,
                )
            }
            H2Hit::Fields(hit) => {
                let end = hit.body.is_none();
                (
                    stream.write_response_fields(hit.status, hit.fields, end),
                    hit.body,
                )
            }
        };
        written.to_client()?;
        Ok(body)
    }

    /// Writes `rest`, the end of a body of `len` bytes whose first part
    /// left before a wait, then counts and logs the hit. `before`: the
    /// stream's body bytes sent before the body began.
    async fn write_h2_body(
        &self,
        stream: &mut H2Session,
        client: Option<IpAddr>,
        rest: Bytes,
        done: ShortcutDone,
        before: usize,
        len: usize,
    ) {
        let cut = match stream.write_body(rest, true).await.to_client() {
            Ok(()) => None,
            Err(e) => {
                let sent = (stream.body_bytes_sent() - before).min(len);
                Some((e, true, sent as u64))
            }
        };
        self.shortcut_counted(stream.req_header(), client, done, H2_RAM_HIT, cut);
    }
}

/// A RAM hit's answer on the HTTP/2 shortcut: the head as a header map
/// (`caching::fast::map_hit`: rendered, a range, a 304, or kept), or as
/// fields encoded ahead of time (`caching::fast::fields_hit`: a whole
/// answer from the kept head).
enum H2Hit {
    Map(caching::fast::MapHit),
    Fields(caching::fast::FieldsHit),
}

/// Marks `req`, normalized by the door, as let through with this host and
/// `Host` value: pingora's path goes on from there (`limits.rs`).
fn door_passed(req: &mut RequestHeader, host: String, authority: String) {
    req.extensions_mut()
        .insert(limits::DoorPassed { host, authority });
}
