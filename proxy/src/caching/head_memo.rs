//! RAM hits' heads rendered once per object and shape (issue 17:
//! "pre-rendered response heads for RAM hits with only `Age`/`Date`
//! patched"). The stored lines kept, the route's edits and what
//! `Cache-Status` says besides its `ttl` are the same from one hit of an
//! object to the next, as the whole, as any part or as a 304; only `Age`,
//! the `ttl`, `Date`, and a part's `Content-Length` and `Content-Range`
//! change ([`super::h1_head::finish`]). They are kept here, for the last
//! object and shape answered in each of [`SLOTS`] slots (a slot by the
//! object's address and the shape), with what they were rendered for: the
//! object, its key, the route's response header edits and the cache
//! settings. A hit whose slot holds another object, or the same one for
//! another route or settings, renders its head as before and takes the
//! slot.
//!
//! HTTP/2's whole answers take the header-map path's head, kept in the
//! same slots as a header map with `Age` and `Cache-Status` written per
//! hit ([`Memo::map_whole`]): building it from the stored lines was about
//! 15,000 of an HTTP/2 hit's 67,000 instructions. The HTTP/2 shortcut
//! sends the same head's fields HPACK-encoded once, with those two encoded
//! per hit in their places ([`Memo::h2_whole`]): cloning, checking and
//! encoding the map was about 9,000 of an HTTP/2 hit's 45,000.
//!
//! Bounded: at most [`SLOTS`] entries, each the head's lines or its map
//! and encoded fields (a few hundred bytes each) and the `Object`'s own
//! allocation, kept by its `Weak` after the RAM tier drops it (its body is
//! freed then) — about 1.5 MB in all.

use std::sync::{Arc, Weak};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use edge_cache::object::Object;
use edge_cache::video::{self, Kind};
use edge_config::Cache;

use super::fields::Served;
use super::h1_head::{self, Fields, Fixed, Shape};
use crate::route::CompiledHeaderOps;
use pingora_core::protocols::http::v2::server::StaticFields;
use pingora_http::ResponseHeader;

/// How many objects' heads are kept.
pub(crate) const SLOTS: usize = 1024;

/// The kept heads (`CacheRuntime::heads`).
pub(crate) struct Memo {
    slots: Box<[ArcSwapOption<Entry>]>,
}

struct Entry {
    /// The object rendered: its allocation cannot be reused by another
    /// object while this is held, so its address names it.
    object: Weak<Object>,
    /// `Shape::class`: a part's lines are the same for every part.
    class: u8,
    key: Box<str>,
    ops: Option<CompiledHeaderOps>,
    settings: Arc<Cache>,
    kind: Kind,
    kept: Kept,
}

/// What a slot keeps of a head.
enum Kept {
    /// HTTP/1's lines (`h1_head::fixed`).
    Lines(Fixed),
    /// The whole answer's head on the header-map path (HTTP/2), hop-by-hop
    /// fields stripped and the route's edits made, with the `Age` and
    /// last `Cache-Status` it was rendered with: per hit those two are
    /// written again ([`patch`]).
    Map(Box<MapKept>),
}

/// A kept header-map head and what [`patch`] writes in it.
struct MapKept {
    head: ResponseHeader,
    /// Its `Cache-Status` values (this cache's the last).
    statuses: usize,
    /// This cache's `Cache-Status` before and after its `ttl`.
    before_ttl: Box<str>,
    after_ttl: Box<str>,
    /// The head's other fields encoded for HTTP/2, when it can be.
    encoded: Option<Encoded>,
}

/// A kept head's fields HPACK-encoded ahead of time for the HTTP/2
/// shortcut ([`Memo::h2_whole`]; vendored h2's `StaticFields`): all but its
/// `Age` and its last `Cache-Status` (this cache's), in order, in three
/// parts: before the first of those two, between them, after them. Per
/// hit those two are encoded in their places, then `Date` where the head
/// has none, as pingora's HTTP/2 writer adds it (at the end): the client
/// reads the fields the header map's way sends, in the same order. A head
/// with a connection-specific field (which that writer removes, moving
/// its last field into the place) or one h2 refuses (`TE` other than
/// `trailers`) is not encoded, and goes that way as before.
struct Encoded {
    parts: [StaticFields; 3],
    status: http::StatusCode,
    age_first: bool,
    has_date: bool,
}

impl Encoded {
    /// `head` (with `statuses` `Cache-Status` values) encoded, or `None`
    /// where it is not (see [`Encoded`]): it has not one `Age` and a
    /// `Cache-Status`, or has a connection-specific field.
    fn of(head: &ResponseHeader, statuses: usize) -> Option<Encoded> {
        let mut parts: [StaticFields; 3] = Default::default();
        let (mut part, mut seen_statuses) = (0, 0);
        let (mut has_date, mut age_first) = (false, false);
        for (name, value) in head.headers.iter() {
            let timed = if *name == http::header::AGE {
                age_first |= part == 0;
                true
            } else if *name == crate::names::CACHE_STATUS {
                seen_statuses += 1;
                seen_statuses == statuses
            } else {
                false
            };
            if timed {
                part += 1;
                if part > 2 {
                    return None;
                }
                continue;
            }
            has_date |= *name == http::header::DATE;
            // A connection-specific field (RFC 9113 §8.2.2) is refused:
            // pingora's writer removes one by `swap_remove`, which moves
            // the last field into its place, an order these parts do not
            // keep (a route's edit can add one; a stored head has none).
            parts[part].push(name, value).ok()?;
        }
        // Each part in an allocation of its size (they grew by doubling).
        let parts = parts.map(|p| {
            let mut exact = StaticFields::with_capacity(p.len());
            exact.extend(&p);
            exact
        });
        (part == 2).then_some(Encoded {
            parts,
            status: head.status,
            age_first,
            has_date,
        })
    }
}

/// The shape class of [`Kept::Map`] (after `Shape::class`'s three).
const MAP_WHOLE: u8 = 3;

impl Entry {
    /// Whether this was rendered for `obj` in `class` with these inputs.
    fn is_for(
        &self,
        obj: &Arc<Object>,
        class: u8,
        key: &str,
        ops: Option<&CompiledHeaderOps>,
        settings: &Arc<Cache>,
    ) -> bool {
        std::ptr::eq(self.object.as_ptr(), Arc::as_ptr(obj))
            && self.class == class
            && *self.key == *key
            && Arc::ptr_eq(&self.settings, settings)
            && self.ops.as_ref() == ops
    }
}

impl Default for Memo {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| ArcSwapOption::empty()).collect(),
        }
    }
}

impl Memo {
    /// The field lines of `obj`'s answer as `shape` says (the whole, a
    /// part, a 304) to a request whose key's URL is `key` and path `path`,
    /// with `ops` (the route's response header edits) and `settings`, and
    /// the kind of what is sent; `None` when the map path must answer
    /// (`h1_head::render`). The same lines as `render`'s.
    pub(crate) fn lines(
        &self,
        obj: &Arc<Object>,
        shape: &Shape,
        (key, path): (&str, &str),
        ops: Option<&CompiledHeaderOps>,
        settings: &Arc<Cache>,
        now: SystemTime,
    ) -> Option<(Fields, Kind)> {
        let parsed = obj.parsed()?;
        let class = shape.class();
        let slot = &self.slots[index(obj, class)];
        {
            let kept = slot.load();
            if let Some(e) = kept
                .as_ref()
                .filter(|e| e.is_for(obj, class, key, ops, settings))
            {
                if let Kept::Lines(fixed) = &e.kept {
                    // The path is the key's (`key::url`): the kind is the same.
                    let served = Served::ram_hit(parsed, key, e.kind);
                    return Some((h1_head::finish(fixed, shape, &served, now), e.kind));
                }
            }
        }
        let kind = video::classify(path, parsed.field("content-type"));
        let served = Served::ram_hit(parsed, key, kind);
        let fixed = h1_head::fixed(parsed, shape, &served, settings, ops)?;
        let fields = h1_head::finish(&fixed, shape, &served, now);
        slot.store(Some(Arc::new(Entry {
            object: Arc::downgrade(obj),
            class,
            key: key.into(),
            ops: ops.cloned(),
            settings: Arc::clone(settings),
            kind,
            kept: Kept::Lines(fixed),
        })));
        Some((fields, kind))
    }

    /// The head of `obj`'s whole answer on the header-map path (HTTP/2)
    /// for a request whose key's URL is `key`, with `ops` and `settings`:
    /// `render`'s (`fast::map_whole`: the stored head with the cache's
    /// fields, hop-by-hop fields stripped, the route's edits made) kept
    /// from an earlier hit with its `Age` and `Cache-Status` written for
    /// `now`, else `render`'s, kept when those two are the only fields that
    /// change with time ([`keepable`]). `Ok(None)`: `render`'s `None` (the
    /// full path answers).
    pub(crate) fn map_whole(
        &self,
        obj: &Arc<Object>,
        key: &str,
        ops: Option<&CompiledHeaderOps>,
        settings: &Arc<Cache>,
        now: SystemTime,
        render: impl FnOnce() -> pingora_error::Result<Option<(ResponseHeader, Kind)>>,
    ) -> pingora_error::Result<Option<(ResponseHeader, Kind)>> {
        let Some(parsed) = obj.parsed() else {
            return render();
        };
        let slot = &self.slots[index(obj, MAP_WHOLE)];
        {
            let kept = slot.load();
            if let Some(e) = kept
                .as_ref()
                .filter(|e| e.is_for(obj, MAP_WHOLE, key, ops, settings))
            {
                if let Kept::Map(kept) = &e.kept {
                    let served = Served::ram_hit(parsed, key, e.kind);
                    if let Some(resp) = patch(kept, &served, now) {
                        return Ok(Some((resp, e.kind)));
                    }
                }
            }
        }
        let Some((resp, kind)) = render()? else {
            return Ok(None);
        };
        let served = Served::ram_hit(parsed, key, kind);
        if keepable(&resp, &served, ops, settings, now) {
            let mut before_ttl = String::new();
            super::fields::cache_status_before_ttl(&mut before_ttl, &settings.status_name, &served);
            let mut after_ttl = String::new();
            super::fields::cache_status_after_ttl(&mut after_ttl, &served);
            let statuses = resp
                .headers
                .get_all(crate::names::CACHE_STATUS)
                .iter()
                .count();
            slot.store(Some(Arc::new(Entry {
                object: Arc::downgrade(obj),
                class: MAP_WHOLE,
                key: key.into(),
                ops: ops.cloned(),
                settings: Arc::clone(settings),
                kind,
                kept: Kept::Map(Box::new(MapKept {
                    head: resp.clone(),
                    statuses,
                    before_ttl: before_ttl.into(),
                    after_ttl: after_ttl.into(),
                    encoded: Encoded::of(&resp, statuses),
                })),
            })));
        }
        Ok(Some((resp, kind)))
    }

    /// The head of `obj`'s whole answer for the HTTP/2 shortcut, as its
    /// status and its fields encoded: the head [`Memo::map_whole`] kept
    /// for these inputs ([`Encoded`]), with `Age` and `Cache-Status` for
    /// `now`, and whether it has a `Date` (where it has none, the caller
    /// adds one after them, as pingora's writer does). `None` where no head
    /// was kept and encoded for them (`map_whole`'s way answers).
    pub(crate) fn h2_whole(
        &self,
        obj: &Arc<Object>,
        key: &str,
        ops: Option<&CompiledHeaderOps>,
        settings: &Arc<Cache>,
        now: SystemTime,
    ) -> Option<(http::StatusCode, StaticFields, bool, Kind)> {
        let parsed = obj.parsed()?;
        let kept = self.slots[index(obj, MAP_WHOLE)].load();
        let e = kept
            .as_ref()
            .filter(|e| e.is_for(obj, MAP_WHOLE, key, ops, settings))?;
        let Kept::Map(kept) = &e.kept else {
            return None;
        };
        let encoded = kept.encoded.as_ref()?;
        let served = Served::ram_hit(parsed, key, e.kind);
        let (age, status) = timed_values(kept, &served, now)?;
        let [before, between, after] = &encoded.parts;
        let mut fields = StaticFields::with_capacity(
            before.len() + between.len() + after.len() + age.len() + status.len() + 64,
        );
        let (age, status) = (
            (&http::header::AGE, &age),
            (&crate::names::CACHE_STATUS, &status),
        );
        let (first, second) = if encoded.age_first {
            (age, status)
        } else {
            (status, age)
        };
        fields.extend(before);
        fields.push(first.0, first.1).ok()?;
        fields.extend(between);
        fields.push(second.0, second.1).ok()?;
        fields.extend(after);
        Some((encoded.status, fields, encoded.has_date, e.kind))
    }
}

/// Whether `resp`, rendered for `served` at `now`, may be kept and
/// [`patch`]ed for later hits: the route's edits name neither `Age` nor
/// `Cache-Status`, and its one `Age` and last `Cache-Status` are what
/// `fields::apply` wrote (nothing removed them: a targeted field, a
/// `Connection` option). Everything else `fields::apply` writes is the
/// same at any time for one object, key and settings.
fn keepable(
    resp: &ResponseHeader,
    served: &Served<'_>,
    ops: Option<&CompiledHeaderOps>,
    settings: &Cache,
    now: SystemTime,
) -> bool {
    let timed = |n: &http::HeaderName| n == http::header::AGE || n == crate::names::CACHE_STATUS;
    if ops.is_some_and(|o| {
        o.remove.iter().any(timed)
            || o.set.iter().any(|(n, _)| timed(n))
            || o.add.iter().any(|(n, _)| timed(n))
    }) {
        return false;
    }
    let Some(age) = super::fields::current_age(served, now) else {
        return false;
    };
    let mut ages = resp.headers.get_all(http::header::AGE).iter();
    let one_age = ages
        .next()
        .is_some_and(|v| v.as_bytes() == age.to_string().as_bytes())
        && ages.next().is_none();
    let status = super::fields::cache_status(&settings.status_name, served, now);
    one_age
        && resp
            .headers
            .get_all(crate::names::CACHE_STATUS)
            .iter()
            .next_back()
            .is_some_and(|v| v.as_bytes() == status.as_bytes())
}

/// A kept head with its `Age` and last `Cache-Status` written for
/// `served` at `now`, in their places; `None` if it cannot be (the head is
/// rendered).
fn patch(kept: &MapKept, served: &Served<'_>, now: SystemTime) -> Option<ResponseHeader> {
    let (age, status) = timed_values(kept, served, now)?;
    let mut resp = kept.head.clone();
    if kept.statuses == 1 {
        // The kept head has one `Age` (`keepable`) and one `Cache-Status`:
        // their values are replaced where they stand, found by a walk of
        // the fields (two `insert_header`s hashed each name and cost about
        // 1,300 instructions per HTTP/2 hit; benches/RESULTS.md).
        let (mut age, mut status) = (Some(age), Some(status));
        for (name, value) in resp.values_in_place() {
            if *name == http::header::AGE {
                if let Some(v) = age.take() {
                    *value = v;
                }
            } else if *name == crate::names::CACHE_STATUS {
                if let Some(v) = status.take() {
                    *value = v;
                }
            }
        }
        // Not found (not a head `keepable` passes): inserted as before.
        if let Some(v) = status {
            resp.insert_header(crate::names::CACHE_STATUS, v).ok()?;
        }
        if let Some(v) = age {
            resp.insert_header(http::header::AGE, v).ok()?;
        }
        return Some(resp);
    }
    // In place: `insert` keeps a name's place, `append` adds to its values.
    {
        let mut values: Vec<http::HeaderValue> = resp
            .headers
            .get_all(crate::names::CACHE_STATUS)
            .iter()
            .cloned()
            .collect();
        *values.last_mut()? = status;
        let mut values = values.into_iter();
        resp.insert_header(crate::names::CACHE_STATUS, values.next()?)
            .ok()?;
        for v in values {
            resp.append_header(crate::names::CACHE_STATUS, v).ok()?;
        }
    }
    resp.insert_header(http::header::AGE, age).ok()?;
    Some(resp)
}

/// The `Age` and this cache's `Cache-Status` of a kept head for `served`
/// at `now` (`fields::current_age`, `fields::cache_status` with its fixed
/// parts kept).
fn timed_values(
    kept: &MapKept,
    served: &Served<'_>,
    now: SystemTime,
) -> Option<(http::HeaderValue, http::HeaderValue)> {
    let age = super::fields::current_age(served, now)?;
    let mut status = String::with_capacity(kept.before_ttl.len() + kept.after_ttl.len() + 26);
    status.push_str(&kept.before_ttl);
    if let Some(ttl) = super::fields::cache_status_ttl(served, now) {
        status.push_str("; ttl=");
        status.push_str(itoa::Buffer::new().format(ttl));
    }
    status.push_str(&kept.after_ttl);
    let status = http::HeaderValue::try_from(status).ok()?;
    Some((http::HeaderValue::from(age), status))
}

/// The slot of an object's answers of one shape class, by the object's
/// address (Fibonacci hashing).
fn index(obj: &Arc<Object>, class: u8) -> usize {
    let addr = (Arc::as_ptr(obj) as usize as u64 >> 4) ^ (u64::from(class) << 60);
    (addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::Bytes;
    use http::{HeaderName, HeaderValue};
    use pingora_http::ResponseHeader;
    use std::time::Duration;

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn object(status: u16, fields: &[(&str, &str)]) -> Arc<Object> {
        let mut h = ResponseHeader::build(status, None).unwrap();
        for (n, v) in fields {
            h.append_header(n.to_string(), *v).unwrap();
        }
        let meta = pingora_cache::CacheMeta::new(
            t0() + Duration::from_secs(100),
            t0() - Duration::from_secs(7),
            0,
            0,
            h,
        )
        .serialize()
        .unwrap();
        let obj = Object::new(meta, Bytes::from_static(b"0123456789"), Default::default());
        assert!(obj.parsed().is_some(), "{fields:?}");
        Arc::new(obj)
    }

    /// What `render` writes for the whole answer, and the kind.
    fn rendered(
        obj: &Object,
        shape: &Shape,
        key: &str,
        path: &str,
        ops: Option<&CompiledHeaderOps>,
        settings: &Cache,
        now: SystemTime,
    ) -> Option<(Vec<u8>, bool, usize, Kind)> {
        let parsed = obj.parsed().unwrap();
        let kind = video::classify(path, parsed.field("content-type"));
        let served = Served::ram_hit(parsed, key, kind);
        let f = h1_head::render(parsed, shape, &served, settings, ops, now)?;
        Some((f.lines.to_vec(), f.has_date, f.content_length, kind))
    }

    #[allow(clippy::too_many_arguments)]
    fn kept(
        memo: &Memo,
        obj: &Arc<Object>,
        shape: &Shape,
        key: &str,
        path: &str,
        ops: Option<&CompiledHeaderOps>,
        settings: &Arc<Cache>,
        now: SystemTime,
    ) -> Option<(Vec<u8>, bool, usize, Kind)> {
        let (f, kind) = memo.lines(obj, shape, (key, path), ops, settings, now)?;
        Some((f.lines.to_vec(), f.has_date, f.content_length, kind))
    }

    fn name(n: &str) -> HeaderName {
        HeaderName::from_bytes(n.as_bytes()).unwrap()
    }

    fn ops_list() -> Vec<Option<CompiledHeaderOps>> {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        vec![
            None,
            Some(CompiledHeaderOps::default()),
            Some(CompiledHeaderOps {
                set: vec![(name("x-served-by"), v("edge-1"))],
                ..Default::default()
            }),
            Some(CompiledHeaderOps {
                set: vec![(name("x-served-by"), v("edge-2"))],
                ..Default::default()
            }),
            Some(CompiledHeaderOps {
                remove: vec![name("age"), name("x-cache")],
                add: vec![(name("x-a"), v("1")), (name("x-a"), v("2"))],
                ..Default::default()
            }),
            Some(CompiledHeaderOps {
                remove: vec![name("cache-status")],
                set: vec![(name("accept-ranges"), v("none"))],
                ..Default::default()
            }),
            // An `Age` of the route's own: the kept head's must be it, even
            // at the hit whose own age it equals.
            Some(CompiledHeaderOps {
                set: vec![(name("age"), v("7"))],
                ..Default::default()
            }),
            // Only the map path writes these edits.
            Some(CompiledHeaderOps {
                set: vec![(name("date"), v("x"))],
                ..Default::default()
            }),
            // A connection-specific field after the cache's (pingora's
            // HTTP/2 writer removes it, moving the last field into its
            // place): not encoded.
            Some(CompiledHeaderOps {
                set: vec![(name("connection"), v("close"))],
                add: vec![(name("x-a"), v("1")), (name("x-b"), v("2"))],
                ..Default::default()
            }),
        ]
    }

    fn settings_list() -> Vec<Arc<Cache>> {
        vec![
            Arc::new(Cache::default()),
            Arc::new(Cache {
                status_name: "shield-7".into(),
                ..Cache::default()
            }),
            Arc::new(Cache {
                forward_targeted_fields: true,
                ..Cache::default()
            }),
            Arc::new(Cache {
                targeted_fields: vec!["cdn-cache-control".into(), "cache-status".into()],
                ..Cache::default()
            }),
        ]
    }

    fn objects() -> Vec<(Arc<Object>, &'static str, &'static str)> {
        vec![
            (
                object(
                    200,
                    &[
                        ("Content-Type", "video/mp2t"),
                        ("Content-Length", "10"),
                        ("ETag", "\"v1\""),
                        ("Cache-Control", "max-age=600"),
                        ("CDN-Cache-Control", "max-age=60"),
                    ],
                ),
                "a.test/seg/1.ts",
                "/seg/1.ts",
            ),
            (
                object(
                    200,
                    &[
                        ("Content-Type", "application/vnd.apple.mpegurl"),
                        ("Content-Length", "10"),
                        ("Date", "Thu, 15 Jan 2027 08:00:00 GMT"),
                        ("Cache-Control", "public, max-age=3600, s-maxage=7200"),
                        ("Cache-Status", "origin; fwd=uri-miss"),
                        ("Accept-Ranges", "bytes"),
                    ],
                ),
                "a.test/live/index.m3u8?_HLS_msn=4",
                "/live/index.m3u8",
            ),
            (
                object(404, &[("Content-Length", "10"), ("X-Odd-CASE", "v")]),
                "a.test/none",
                "/none",
            ),
            (
                object(200, &[("Content-Length", "0"), ("Accept-Ranges", "none")]),
                "a.test/empty",
                "/empty",
            ),
            // Only the map path answers these.
            (
                object(200, &[("Transfer-Encoding", "chunked")]),
                "a.test/chunked",
                "/chunked",
            ),
            (
                object(200, &[("Content-Length", "10"), ("Connection", "x-a")]),
                "a.test/nominates",
                "/nominates",
            ),
        ]
    }

    #[test]
    fn a_kept_head_is_the_rendered_one_whatever_changes_between_hits() {
        // One memo for every case. Each case is asked for, then one thing
        // is changed (the key, the route's edits, the settings, the shape,
        // the part) and it is asked for again, then the case again: each
        // answer is what `render` writes then, at a later time each turn.
        let memo = Memo::default();
        let (objects, ops, settings) = (objects(), ops_list(), settings_list());
        let shapes = [
            Shape::Whole,
            Shape::Part(0..5),
            Shape::Part(3..10),
            Shape::NotModified,
        ];
        let keys = |key, path| [(key, path), ("b.test/other.mpd", "/other.mpd")];
        let mut turn = 0u64;
        let mut answered = 0;
        for (obj, key, path) in &objects {
            for k in 0..2 {
                for o in 0..ops.len() {
                    for s in 0..settings.len() {
                        for h in 0..shapes.len() {
                            let base = (k, o, s, h);
                            let others = [
                                (1 - k, o, s, h),
                                (k, (o + 1) % ops.len(), s, h),
                                (k, o, (s + 1) % settings.len(), h),
                                (k, o, s, (h + 1) % shapes.len()),
                            ];
                            let mut asks = vec![base, base];
                            for other in others {
                                asks.extend([other, base, base]);
                            }
                            for (k, o, s, h) in asks {
                                turn += 1;
                                let now = t0() + Duration::from_secs(turn % 200);
                                let (key, path) = keys(*key, *path)[k];
                                let (o, s, h) = (ops[o].as_ref(), &settings[s], &shapes[h]);
                                let want = rendered(obj, h, key, path, o, s, now);
                                let got = kept(&memo, obj, h, key, path, o, s, now);
                                assert_eq!(
                                    got.as_ref()
                                        .map(|g| String::from_utf8_lossy(&g.0).into_owned()),
                                    want.as_ref()
                                        .map(|w| String::from_utf8_lossy(&w.0).into_owned()),
                                    "{key} {:?} {}",
                                    o.map(|o| (&o.remove, &o.set, &o.add)),
                                    s.status_name
                                );
                                assert_eq!(got, want);
                                answered += usize::from(got.is_some());
                            }
                        }
                    }
                }
            }
        }
        assert!(answered > 4000, "{answered}");
    }

    /// The header-map path's head, rendered now (what `fast::try_serve`
    /// renders): its status and fields in order.
    fn map_rendered(
        obj: &Object,
        key: &str,
        path: &str,
        ops: Option<&CompiledHeaderOps>,
        settings: &Cache,
        now: SystemTime,
    ) -> Option<(ResponseHeader, Kind)> {
        let req = pingora_http::RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        let parsed = obj.parsed().unwrap();
        let mut head = super::super::fast::map_head(
            &req,
            parsed,
            Some(edge_cache::Tier::Ram),
            key,
            settings,
            now,
        )
        .unwrap()?;
        crate::hop::strip_response(&mut head.resp, false);
        crate::decorate::Decor {
            ops,
            rate_limit: None,
        }
        .apply(&mut head.resp)
        .unwrap();
        Some((head.resp, head.kind))
    }

    fn fields_of(r: &(ResponseHeader, Kind)) -> (u16, Vec<(String, Vec<u8>)>, Kind) {
        let fields =
            r.0.headers
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                .collect();
        (r.0.status.as_u16(), fields, r.1)
    }

    #[test]
    fn a_kept_http2_head_is_the_rendered_one_whatever_changes_between_hits() {
        // As above for the header-map path's whole answers, between HTTP/1
        // hits of the same objects (their lines are kept in other slots).
        let memo = Memo::default();
        let (objects, ops, settings) = (objects(), ops_list(), settings_list());
        let keys = |key, path| [(key, path), ("b.test/other.mpd", "/other.mpd")];
        let mut turn = 0u64;
        let (mut answered, mut from_kept, mut encoded) = (0, 0, 0);
        for (obj, key, path) in &objects {
            for k in 0..2 {
                for o in 0..ops.len() {
                    for s in 0..settings.len() {
                        let base = (k, o, s);
                        let mut asks = vec![base, base, base];
                        for other in [
                            (1 - k, o, s),
                            (k, (o + 1) % ops.len(), s),
                            (k, o, (s + 1) % settings.len()),
                        ] {
                            asks.extend([other, base, base]);
                        }
                        for (k, o, s) in asks {
                            turn += 1;
                            let now = t0() + Duration::from_secs(turn % 200);
                            let (key, path) = keys(*key, *path)[k];
                            let (o, s) = (ops[o].as_ref(), &settings[s]);
                            let want = map_rendered(obj, key, path, o, s, now);
                            let slot = &memo.slots[index(obj, MAP_WHOLE)];
                            let was_kept = slot.load().as_ref().is_some_and(|e| {
                                e.is_for(obj, MAP_WHOLE, key, o, s)
                                    && matches!(e.kept, Kept::Map(_))
                            });
                            let got = memo
                                .map_whole(obj, key, o, s, now, || {
                                    Ok(map_rendered(obj, key, path, o, s, now))
                                })
                                .unwrap();
                            assert_eq!(
                                got.as_ref().map(fields_of),
                                want.as_ref().map(fields_of),
                                "{key} {:?} {} kept: {was_kept}",
                                o.map(|o| (&o.remove, &o.set, &o.add)),
                                s.status_name
                            );
                            answered += usize::from(got.is_some());
                            from_kept += usize::from(was_kept);
                            // Encoded for the HTTP/2 shortcut: what
                            // pingora's writer sends of the rendered head.
                            if let Some((status, fields, has_date, kind)) =
                                memo.h2_whole(obj, key, o, s, now)
                            {
                                let want = want.as_ref().unwrap();
                                assert_eq!((status, kind), (want.0.status, want.1));
                                assert_eq!(
                                    fields.as_bytes(),
                                    sent_by_pingora(&want.0, has_date).as_bytes(),
                                    "{key} {:?} {}",
                                    o.map(|o| (&o.remove, &o.set, &o.add)),
                                    s.status_name
                                );
                                encoded += 1;
                            }
                            // An HTTP/1 hit of the same object between.
                            let _ = kept(&memo, obj, &Shape::Whole, key, path, o, s, now);
                        }
                    }
                }
            }
        }
        assert!(answered > 1000, "{answered}");
        assert!(
            from_kept > 500,
            "{from_kept} of {answered} from a kept head"
        );
        assert!(encoded > 300, "{encoded} of {from_kept} kept heads encoded");
    }

    /// `head`'s fields as pingora's HTTP/2 writer sends them
    /// (`write_response_header`), encoded, without the `Date` it adds
    /// where `has_date` is false; `has_date` must say whether `head` has
    /// one, and it must have no connection-specific field (which that
    /// writer removes; `push` fails).
    fn sent_by_pingora(head: &ResponseHeader, has_date: bool) -> StaticFields {
        assert_eq!(head.headers.contains_key(http::header::DATE), has_date);
        let mut fields = StaticFields::default();
        for (name, value) in head.headers.iter() {
            fields.push(name, value).unwrap();
        }
        fields
    }

    /// A head is encoded around its one `Age` and its last `Cache-Status`,
    /// wherever they are; not one without both, with two `Age`s, with a
    /// connection-specific field, or with a field h2 refuses (`TE` but
    /// `trailers`).
    #[test]
    fn heads_are_encoded_around_age_and_the_last_cache_status() {
        let head = |fields: &[(&str, &str)]| {
            let mut h = ResponseHeader::build(200, None).unwrap();
            for (n, v) in fields {
                h.append_header(n.to_string(), *v).unwrap();
            }
            h
        };
        let (age, status) = (("age", "1"), ("cache-status", "edge; hit"));
        let upstream = ("cache-status", "origin; fwd=miss");
        let (ct, xc, date) = (
            ("content-type", "text/plain"),
            ("x-cache", "HIT"),
            ("date", "Thu, 01 Jan 2026 00:00:00 GMT"),
        );
        // The fields, the `Cache-Status` values, the three parts expected
        // (`None`: not encoded) and whether `Age` comes first.
        type Fields<'a> = Vec<(&'a str, &'a str)>;
        type Case<'a> = (Fields<'a>, usize, Option<([Fields<'a>; 3], bool)>);
        let cases: Vec<Case> = vec![
            (
                vec![ct, age, xc, status],
                1,
                Some(([vec![ct], vec![xc], vec![]], true)),
            ),
            (vec![age, status], 1, Some(([vec![], vec![], vec![]], true))),
            (
                vec![status, ct, age, date],
                1,
                Some(([vec![], vec![ct], vec![date]], false)),
            ),
            (vec![ct, ("connection", "x"), age, status], 1, None),
            (vec![ct, age, ("upgrade", "h2c"), status], 1, None),
            (vec![ct, age, status, ("keep-alive", "1")], 1, None),
            (vec![ct, age, status, ("proxy-connection", "1")], 1, None),
            (vec![("transfer-encoding", "chunked"), age, status], 1, None),
            (
                vec![ct, ("te", "trailers"), age, status],
                1,
                Some(([vec![ct, ("te", "trailers")], vec![], vec![]], true)),
            ),
            // The upstream's `Cache-Status` is kept; this cache's is the last.
            (
                vec![ct, age, xc, upstream, status, ("x-a", "1")],
                2,
                Some(([vec![ct], vec![xc, upstream], vec![("x-a", "1")]], true)),
            ),
            (vec![ct, ("te", "gzip"), age, status], 1, None),
            (vec![ct, age], 1, None),
            (vec![ct, status], 1, None),
            (vec![age, status, ("age", "2")], 1, None),
            (vec![], 1, None),
        ];
        for (fields, statuses, want) in cases {
            let got = Encoded::of(&head(&fields), statuses);
            assert_eq!(got.is_some(), want.is_some(), "{fields:?}");
            let (Some(got), Some((parts, age_first))) = (got, want) else {
                continue;
            };
            for (i, part) in parts.iter().enumerate() {
                let mut want = StaticFields::default();
                for (n, v) in part {
                    want.push(&name(n), &HeaderValue::from_str(v).unwrap())
                        .unwrap();
                }
                assert_eq!(
                    got.parts[i].as_bytes(),
                    want.as_bytes(),
                    "{fields:?} part {i}"
                );
            }
            assert_eq!(got.age_first, age_first, "{fields:?}");
            assert_eq!(got.has_date, fields.contains(&date), "{fields:?}");
        }
    }

    #[test]
    fn objects_sharing_slots_and_objects_dropped_get_their_own_heads() {
        let memo = Memo::default();
        let settings = Arc::new(Cache::default());
        let etag = |i: usize| format!("\"{i}\"");
        let make = |i: usize| {
            object(
                200,
                &[
                    ("Content-Length", "10"),
                    ("ETag", etag(i).as_str()),
                    ("Content-Type", "text/plain"),
                ],
            )
        };
        // More objects than slots: some share one. Each asked for twice
        // over, then again after the others.
        let many: Vec<Arc<Object>> = (0..3 * SLOTS).map(make).collect();
        for _ in 0..2 {
            for (i, obj) in many.iter().enumerate() {
                let key = format!("a.test/{i}");
                let got =
                    kept(&memo, obj, &Shape::Whole, &key, "/x", None, &settings, t0()).unwrap();
                let text = String::from_utf8(got.0).unwrap();
                assert!(text.contains(&format!("ETag: {}\r\n", etag(i))), "{text}");
                assert!(text.contains(&format!("key=\"a.test/{i}\"")), "{text}");
            }
        }
        // An object the tier dropped and one made after it, under the same
        // key: the new one's head, not the kept one.
        for i in 0..200 {
            let old = make(10_000 + i);
            kept(
                &memo,
                &old,
                &Shape::Whole,
                "a.test/same",
                "/x",
                None,
                &settings,
                t0(),
            )
            .unwrap();
            drop(old);
            let new = make(20_000 + i);
            let got = kept(
                &memo,
                &new,
                &Shape::Whole,
                "a.test/same",
                "/x",
                None,
                &settings,
                t0(),
            )
            .unwrap();
            let text = String::from_utf8(got.0).unwrap();
            assert!(
                text.contains(&format!("ETag: {}\r\n", etag(20_000 + i))),
                "{text}"
            );
        }
    }
}
