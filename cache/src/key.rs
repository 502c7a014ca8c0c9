//! Cache keys: scheme, authority, path, normalized query, a slice index for
//! sliced objects, and request headers a route adds.
//!
//! A primary key is built from length-delimited parts, so two requests that
//! differ in any part never share one, whatever bytes the parts hold:
//!
//! ```text
//! {authority len}.{len}:{url}|{len}:{scheme}|{slice or -}|{count}[|{len}:{name}{count}{len}:{value}…]…
//! ```
//!
//! The URL (`authority` + path + `?` + normalized query, the scheme left
//! out) is what purges by URL and prefix match, so a purge reaches every
//! scheme, slice and header variant of a URL.

use std::borrow::Cow;

use edge_config::IgnoreQuery;
use http::HeaderMap;
use pingora_cache::key::CacheHashKey;

/// The storage key of a cache key: its combined hash in lower-case hex, as
/// pingora's `CacheHashKey::combined` gives it (which writes each byte with
/// `write!`: about 1,900 instructions against 200; `benches/callgrind`).
pub fn storage_key(key: &impl CacheHashKey) -> String {
    // Written into a fixed buffer: `hex::encode` collects chars into the
    // String, about 900 instructions per key (a tenth of a RAM hit's
    // own work; benches/callgrind/instr.sh).
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let bin = key.combined_bin();
    let mut out = [0u8; 32];
    for (pair, b) in out.chunks_exact_mut(2).zip(bin) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
    // Only hex digits were written.
    std::str::from_utf8(&out).unwrap_or_default().to_owned()
}

/// The storage key of a cache key as the RAM tier holds it: the same as
/// `StoredKey::new(&storage_key(key))` (the combined hash), without the
/// hex text made and parsed back.
pub fn stored_key(key: &impl CacheHashKey) -> StoredKey {
    StoredKey::Hash(key.combined_bin())
}

/// The value of a lower-case hex digit.
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// A storage key as the RAM tier and the purge index hold it: the 16 bytes
/// a key of 32 lower-case hex digits spells ([`storage_key`] makes only
/// those), else its text. Inline, without the heap allocation of a
/// `Box<str>` (48 bytes with the allocator's header for a 32-byte key;
/// issue 17's per-object overhead). Converting back gives the same text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StoredKey {
    Hash([u8; 16]),
    Text(Box<str>),
}

impl StoredKey {
    pub fn new(key: &str) -> StoredKey {
        let b = key.as_bytes();
        if b.len() == 32 {
            let mut out = [0u8; 16];
            let decoded = out.iter_mut().zip(b.chunks_exact(2)).all(|(o, pair)| {
                match (hex_digit(pair[0]), hex_digit(pair[1])) {
                    (Some(hi), Some(lo)) => {
                        *o = hi << 4 | lo;
                        true
                    }
                    _ => false,
                }
            });
            if decoded {
                return StoredKey::Hash(out);
            }
        }
        StoredKey::Text(key.into())
    }

    /// The key's text, as it was given to [`StoredKey::new`].
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            StoredKey::Hash(h) => Cow::Owned(hex::encode(h)),
            StoredKey::Text(t) => Cow::Borrowed(t),
        }
    }
}

impl std::fmt::Display for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

/// An HLS delivery directive (`_HLS_msn`, `_HLS_part`, `_HLS_skip`; RFC
/// 8216bis §6.2.5): it selects what a playlist holds, so it is always part
/// of the key, whatever the route ignores. Only these three: any other
/// `_HLS_` name would be a cache buster on a route that ignores queries.
pub fn is_hls_directive(name: &str) -> bool {
    matches!(name, "_HLS_msn" | "_HLS_part" | "_HLS_skip")
}

/// Sorts query parameters by name and drops ignored ones, so `?b=2&a=1`
/// and `?a=1&b=2` share an entry (but `?a=2&a=1` and `?a=1&a=2` do not).
/// HLS delivery directives are never dropped. Returns `None` when nothing
/// remains.
pub fn normalize_query<'a>(query: Option<&'a str>, ignore: &IgnoreQuery) -> Option<Cow<'a, str>> {
    let q = query?.trim_start_matches('?');
    if q.is_empty() {
        return None;
    }
    if in_key_form(q, ignore) {
        return Some(Cow::Borrowed(q));
    }
    let mut s = String::with_capacity(q.len() + 1);
    push_query(&mut s, q, ignore);
    s.strip_prefix('?').map(|rest| Cow::Owned(rest.to_owned()))
}

/// The name of a query pair: what comes before its first `=`. Found a byte
/// at a time: `split_once('=')` goes through `str`'s `CharSearcher`, and a
/// RAM hit's key of a two-pair query out of order spent about 750
/// instructions in it (benches/RESULTS.md).
fn query_name(pair: &str) -> &str {
    match pair.bytes().position(|b| b == b'=') {
        Some(i) => &pair[..i],
        None => pair,
    }
}

/// The pieces of a query between `&`s, as `str::split('&')` gives them
/// (empty ones too), found a byte at a time (see [`query_name`]).
fn query_pairs(q: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(q);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.bytes().position(|b| b == b'&') {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

#[inline]
fn kept(name: &str, ignore: &IgnoreQuery) -> bool {
    is_hls_directive(name)
        || match ignore {
            IgnoreQuery::All => false,
            IgnoreQuery::Names(names) => !names.iter().any(|n| n == name),
            IgnoreQuery::None => true,
        }
}

/// Already in key form: every pair kept, none empty, names in order.
fn in_key_form(q: &str, ignore: &IgnoreQuery) -> bool {
    let mut previous = "";
    query_pairs(q).all(|p| {
        let n = query_name(p);
        let ok = !p.is_empty() && kept(n, ignore) && previous <= n;
        previous = n;
        ok
    })
}

/// Appends `?` and the normalized query `q` (without its `?`) to `out`, or
/// nothing when no pair remains ([`normalize_query`]'s rule). Up to 16
/// pairs are sorted on the stack (a list and a join cost a key two
/// allocations: `url` of a two-pair query out of order took 2,133
/// instructions, 1,863 then; `benches/callgrind/instr.sh`). One walk
/// finds the pairs and whether the query is in key form (a 1 KiB RAM hit
/// of a two-pair query out of order 22,813 → 22,478 instructions, where
/// it was walked twice).
fn push_query(out: &mut String, q: &str, ignore: &IgnoreQuery) {
    if q.is_empty() {
        return;
    }
    const ON_STACK: usize = 16;
    // (name, pair): each name found once, not at every comparison. One
    // walk finds the pairs and whether the query is in key form already
    // (`in_key_form`), where a query out of order was walked twice.
    let mut stack = [("", ""); ON_STACK];
    let mut n = 0;
    let mut in_form = true;
    let mut previous = "";
    for p in query_pairs(q) {
        let name = query_name(p);
        if p.is_empty() || !kept(name, ignore) {
            in_form = false;
            continue;
        }
        in_form &= previous <= name;
        previous = name;
        if let Some(slot) = stack.get_mut(n) {
            *slot = (name, p);
        }
        n += 1;
    }
    if in_form {
        out.push('?');
        out.push_str(q);
        return;
    }
    // More than fit on the stack, out of order: collected again.
    let mut heap = Vec::new();
    let pairs: &mut [(&str, &str)] = if n <= ON_STACK {
        &mut stack[..n]
    } else {
        heap.extend(query_pairs(q).filter_map(|p| {
            let name = query_name(p);
            (!p.is_empty() && kept(name, ignore)).then_some((name, p))
        }));
        &mut heap
    };
    // By name only, and stable: repeated names keep their order, which a
    // backend may give meaning to (`id=2&id=1` is not `id=1&id=2`).
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    for (i, (_, p)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(p);
    }
}

/// The URL part of a key: authority (`host[:port]`, already normalized by
/// the request path), path, normalized query. It reads as one string (what
/// purges match), and remembers where the authority ends, so that keys
/// tell `a` + `/b/c` from `a/b` + `/c` whatever the parts hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Url {
    text: String,
    authority_len: usize,
}

impl Url {
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::ops::Deref for Url {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Builds the [`Url`] of a request.
pub fn url(authority: &str, path: &str, query: Option<&str>, ignore: &IgnoreQuery) -> Url {
    let mut s = String::with_capacity(authority.len() + path.len() + query.map_or(0, str::len) + 2);
    s.push_str(authority);
    s.make_ascii_lowercase();
    let authority_len = s.len();
    s.push_str(if path.is_empty() { "/" } else { path });
    if let Some(q) = query {
        push_query(&mut s, q.trim_start_matches('?'), ignore);
    }
    Url {
        text: s,
        authority_len,
    }
}

/// Appends `n` in decimal (`to_string` and `write!` go through the
/// formatter: a key's five numbers took about 550 instructions).
fn push_number(s: &mut String, n: impl itoa::Integer) {
    s.push_str(itoa::Buffer::new().format(n));
}

fn push_part(s: &mut String, part: &str) {
    push_number(s, part.len());
    s.push(':');
    s.push_str(part);
}

/// The cache key of a primary key ([`primary`]), with no user tag and its
/// primary hash set: BLAKE2b with a 16-byte digest (RFC 7693 with `nn` =
/// 16) of the primary key, the hash pingora's `CacheKey::primary_bin`
/// computes (so stored objects keep their keys), by `blake2b_simd` (its
/// AVX2 compression) instead of the `blake2` crate's portable one: 1,745
/// instructions per key of one block with `blake2` (`benches/callgrind`,
/// a RAM hit's profile). pingora then reads the hash wherever it needs it
/// (`primary_bin`, `combined_bin`, `to_compact`) instead of hashing again.
pub fn cache_key(primary: impl Into<Vec<u8>>) -> pingora_cache::CacheKey {
    let primary = primary.into();
    let hash = primary_hash(&primary);
    let mut key = pingora_cache::CacheKey::new(primary, "");
    key.set_primary_bin_override(hash);
    key
}

/// BLAKE2b-128 of `primary` ([`cache_key`]).
pub fn primary_hash(primary: &[u8]) -> [u8; 16] {
    let hash = blake2b_simd::Params::new().hash_length(16).hash(primary);
    let mut out = [0u8; 16];
    out.copy_from_slice(hash.as_bytes());
    out
}

/// The full primary key for a request: `scheme` is `http` or `https` (an
/// origin may answer them differently), `key_headers` (lower-case names)
/// are the request headers a route adds to its keys.
pub fn primary(
    url: &Url,
    scheme: &str,
    slice: Option<u64>,
    key_headers: &[String],
    headers: &HeaderMap,
) -> String {
    let mut s = String::with_capacity(url.len() + 24);
    push_number(&mut s, url.authority_len);
    s.push('.');
    push_part(&mut s, url);
    s.push('|');
    push_part(&mut s, scheme);
    s.push('|');
    match slice {
        Some(i) => push_number(&mut s, i),
        None => s.push('-'),
    }
    s.push('|');
    push_number(&mut s, key_headers.len());
    for name in key_headers {
        s.push('|');
        push_part(&mut s, name);
        let values: Vec<&[u8]> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        // Each value on its own, so `a,b` and `a` + `b` differ too.
        push_number(&mut s, values.len());
        for v in values {
            // Bytes that are not UTF-8 as hex, marked, so no two values meet.
            match std::str::from_utf8(v) {
                Ok(text) => {
                    s.push('u');
                    push_part(&mut s, text);
                }
                Err(_) => {
                    s.push('x');
                    let hex = hex::encode(v);
                    push_part(&mut s, &hex);
                }
            }
        }
    }
    s
}

/// The URL part of a primary key (the whole string if it is not one).
pub fn url_of(primary: &str) -> &str {
    primary
        .split_once('.')
        .and_then(|(_, rest)| rest.split_once(':'))
        .and_then(|(len, rest)| rest.get(..len.parse::<usize>().ok()?))
        .unwrap_or(primary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The primary hash is pingora's (`blake2`'s BLAKE2b-128) for keys of
    /// every length across the 128-byte block boundaries, and the key
    /// reads it back everywhere pingora does.
    #[test]
    fn the_primary_hash_is_pingoras() {
        use pingora_cache::key::CacheHashKey;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in (0..=300).chain([511, 512, 513, 4096, 70_000]) {
            let primary: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let theirs = pingora_cache::CacheKey::new(primary.clone(), "");
            let ours = cache_key(primary.clone());
            assert_eq!(primary_hash(&primary), theirs.primary_bin(), "{len} bytes");
            assert_eq!(ours.primary_bin(), theirs.primary_bin(), "{len} bytes");
            assert_eq!(ours.combined_bin(), theirs.combined_bin(), "{len} bytes");
            assert_eq!(ours.to_compact(), theirs.to_compact(), "{len} bytes");
            assert_eq!(storage_key(&ours), storage_key(&theirs), "{len} bytes");
            assert_eq!(stored_key(&ours), StoredKey::new(&storage_key(&theirs)));
            assert_eq!(ours.primary_key(), &primary[..]);
            // With a variance the combined hash is pingora's too.
            let mut theirs = theirs;
            let mut ours = ours;
            theirs.set_variance_key([7; 16]);
            ours.set_variance_key([7; 16]);
            assert_eq!(ours.combined_bin(), theirs.combined_bin(), "{len} bytes");
            assert_eq!(stored_key(&ours), StoredKey::new(&storage_key(&theirs)));
        }
        // A known value (pingora's own test).
        assert_eq!(
            hex::encode(primary_hash(b"aa")),
            "ac10f2aef117729f8dad056b3059eb7e"
        );
    }

    /// The rule in its plain form: keep, sort by name (stable), join.
    fn reference(q: &str, ignore: &IgnoreQuery) -> Option<String> {
        let name = |p: &str| p.split_once('=').map_or(p, |(k, _)| k).to_string();
        let mut pairs: Vec<&str> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .filter(|p| {
                let n = name(p);
                is_hls_directive(&n)
                    || match ignore {
                        IgnoreQuery::All => false,
                        IgnoreQuery::Names(names) => !names.contains(&n),
                        IgnoreQuery::None => true,
                    }
            })
            .collect();
        pairs.sort_by_key(|p| name(p));
        (!pairs.is_empty()).then(|| pairs.join("&"))
    }

    #[test]
    fn a_query_already_in_key_form_is_kept_as_it_is_and_others_as_the_rule_says() {
        // Every query of up to four pairs over a small alphabet, including
        // empty pairs, repeated names, names without values, `_HLS_msn`
        // and names and values beyond ASCII (split a byte at a time).
        let parts = [
            "a=1",
            "a=2",
            "b",
            "b=",
            "c=3",
            "",
            "_HLS_msn=4",
            "a",
            "é=ü=",
        ];
        let ignores = [
            IgnoreQuery::None,
            IgnoreQuery::All,
            IgnoreQuery::Names(vec!["b".into()]),
        ];
        let mut queries = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = queries
                .iter()
                .flat_map(|q| {
                    parts.iter().map(move |p| {
                        if q.is_empty() {
                            (*p).to_string()
                        } else {
                            format!("{q}&{p}")
                        }
                    })
                })
                .collect();
            queries.extend(longer);
        }
        queries.sort();
        queries.dedup();
        assert!(queries.len() > 2_000);
        for q in &queries {
            for ignore in &ignores {
                assert_eq!(
                    normalize_query(Some(q), ignore).map(Cow::into_owned),
                    reference(q, ignore),
                    "{q:?} {ignore:?}"
                );
            }
        }
        assert!(matches!(
            normalize_query(Some("a=1&b=2"), &IgnoreQuery::None),
            Some(Cow::Borrowed("a=1&b=2"))
        ));
    }

    #[test]
    fn a_url_carries_the_normalized_query_of_any_number_of_pairs() {
        // Around the 16 pairs sorted on the stack, in reverse order (every
        // pair moves), with repeats and ignored names among them.
        let ignore = IgnoreQuery::Names(vec!["drop".into()]);
        for n in [0usize, 1, 2, 15, 16, 17, 40] {
            let pairs: Vec<String> = (0..n)
                .rev()
                .map(|i| match i % 5 {
                    0 => format!("drop={i}"),
                    1 => format!("k{:02}=a", i / 2),
                    _ => format!("k{i:02}={i}"),
                })
                .collect();
            let q = pairs.join("&");
            for ignore in [&ignore, &IgnoreQuery::None, &IgnoreQuery::All] {
                let url = url("Example.com", "/v/a.ts", Some(&format!("?{q}")), ignore);
                let expected = match reference(&q, ignore) {
                    Some(r) => format!("example.com/v/a.ts?{r}"),
                    None => "example.com/v/a.ts".to_string(),
                };
                assert_eq!(url.as_str(), expected, "{n} {ignore:?}");
                assert_eq!(
                    normalize_query(Some(&q), ignore).map(Cow::into_owned),
                    reference(&q, ignore)
                );
            }
            // In key form already (every pair kept, names in order), of
            // any number of pairs: as it is.
            if let Some(in_form) = reference(&q, &IgnoreQuery::None) {
                let url = url("a", "/", Some(&in_form), &IgnoreQuery::None);
                assert_eq!(url.as_str(), format!("a/?{in_form}"), "{n}");
            }
        }
    }

    #[test]
    fn stored_keys_give_back_the_text_they_were_made_from() {
        let hash = "0123456789abcdef0123456789abcdef";
        assert!(matches!(StoredKey::new(hash), StoredKey::Hash(_)));
        for text in [
            hash,
            "",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789abcdef0123456789abcdeg",
            "+123456789abcdef0123456789abcdef",
            "obj42",
            "é123456789abcdef0123456789abcde",
        ] {
            let k = StoredKey::new(text);
            assert_eq!(k.text(), text);
            assert_eq!(k.to_string(), text);
            assert_eq!(k, StoredKey::new(text));
            if text != hash {
                assert!(matches!(k, StoredKey::Text(_)), "{text}");
                assert_ne!(k, StoredKey::new(hash));
            }
        }
        let key = pingora_cache::CacheKey::new("a.test/x", "u");
        let s = storage_key(&key);
        assert_eq!(StoredKey::new(&s).text(), s);
        assert!(matches!(StoredKey::new(&s), StoredKey::Hash(_)));
    }

    #[test]
    fn storage_keys_are_pingoras_combined_hex() {
        for (primary, variance) in [
            ("", ""),
            ("a.test/x", ""),
            ("a.test/x?q=1", "v"),
            ("\u{0}é", "\u{ff}"),
        ] {
            let mut key = pingora_cache::CacheKey::new(primary, "u");
            if !variance.is_empty() {
                key.set_variance_key([variance.as_bytes()[0]; 16]);
            }
            assert_eq!(storage_key(&key), key.combined(), "{primary:?}");
            assert_eq!(storage_key(&key).len(), 32);
        }
    }

    #[test]
    fn query_is_sorted_and_filtered() {
        let none = IgnoreQuery::None;
        assert_eq!(
            normalize_query(Some("b=2&a=1"), &none).as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(
            normalize_query(Some("id=2&b=1&id=1"), &none).as_deref(),
            Some("b=1&id=2&id=1")
        );
        assert_ne!(
            normalize_query(Some("id=2&id=1"), &none),
            normalize_query(Some("id=1&id=2"), &none)
        );
        assert_eq!(normalize_query(Some(""), &none), None);
        assert_eq!(normalize_query(None, &none), None);
        assert_eq!(normalize_query(Some("a=1&b=2"), &IgnoreQuery::All), None);
        let names = IgnoreQuery::Names(vec!["token".into(), "utm".into()]);
        assert_eq!(
            normalize_query(Some("token=x&v=2&utm=y"), &names).as_deref(),
            Some("v=2")
        );
        assert_eq!(normalize_query(Some("token=x"), &names), None);
    }

    #[test]
    fn hls_delivery_directives_are_always_keyed() {
        let all = IgnoreQuery::All;
        assert_eq!(
            normalize_query(Some("t=1&_HLS_part=2&_HLS_msn=9"), &all).as_deref(),
            Some("_HLS_msn=9&_HLS_part=2")
        );
        let names = IgnoreQuery::Names(vec!["_HLS_skip".into(), "t".into()]);
        assert_eq!(
            normalize_query(Some("_HLS_skip=YES&t=1"), &names).as_deref(),
            Some("_HLS_skip=YES")
        );
        assert_ne!(
            normalize_query(Some("_HLS_msn=9&_HLS_part=1"), &all),
            normalize_query(Some("_HLS_msn=9&_HLS_part=2"), &all)
        );
        assert_eq!(
            normalize_query(Some("_HLS_part=1&_HLS_msn=9"), &all),
            normalize_query(Some("_HLS_msn=9&_HLS_part=1"), &all)
        );
        // Other `_HLS_` names are ordinary parameters: no cache busting
        // where the route ignores queries.
        assert_eq!(
            normalize_query(Some("_HLS_foo=1&_HLS_=2&_hls_msn=3"), &all),
            None
        );
        assert_eq!(
            normalize_query(Some("_HLS_foo=1&_HLS_skip=v2"), &all).as_deref(),
            Some("_HLS_skip=v2")
        );
    }

    #[test]
    fn primary_keys_carry_scheme_slices_and_headers_after_the_url() {
        let mut h = HeaderMap::new();
        h.insert("accept-language", "nl".parse().unwrap());
        let rule = vec!["accept-language".to_string()];
        let u = url(
            "Video.Example.com",
            "/a.ts",
            Some("z=1&a=2"),
            &IgnoreQuery::None,
        );
        assert_eq!(u.as_str(), "video.example.com/a.ts?a=2&z=1");
        let p = primary(&u, "https", Some(3), &rule, &h);
        assert_eq!(url_of(&p), u.as_str());
        assert_ne!(primary(&u, "https", Some(4), &rule, &h), p);
        assert_ne!(primary(&u, "http", Some(3), &rule, &h), p);
        assert_ne!(primary(&u, "https", None, &rule, &h), p);
    }

    #[test]
    fn no_two_different_requests_share_a_key() {
        let none = HeaderMap::new();
        // Concatenation would make each pair equal. (The authority never
        // holds `/` and the path starts with one: the URL splits at its
        // first `/`.)
        let pairs = [
            (("edge.test", "/evil/app.js"), ("edge.test/evil", "/app.js")),
            (("a", "/b|4:http"), ("a", "/b")),
        ];
        for ((h1, p1), (h2, p2)) in pairs {
            let k1 = primary(
                &url(h1, p1, None, &IgnoreQuery::None),
                "http",
                None,
                &[],
                &none,
            );
            let k2 = primary(
                &url(h2, p2, None, &IgnoreQuery::None),
                "http",
                None,
                &[],
                &none,
            );
            assert_ne!(k1, k2);
        }
        let rule = vec!["x".to_string(), "y".to_string()];
        let mut a = HeaderMap::new();
        a.insert("x", "1&y=2".parse().unwrap());
        let mut b = HeaderMap::new();
        b.insert("x", "1".parse().unwrap());
        b.insert("y", "2&y=".parse().unwrap());
        let mut c = HeaderMap::new();
        c.append("x", "a,b".parse().unwrap());
        let mut d = HeaderMap::new();
        d.append("x", "a".parse().unwrap());
        d.append("x", "b".parse().unwrap());
        let u = url("u", "/", None, &IgnoreQuery::None);
        let k = |h: &HeaderMap| primary(&u, "http", None, &rule, h);
        assert_ne!(k(&a), k(&b));
        assert_ne!(k(&c), k(&d));
        assert_eq!(url_of(&k(&a)), "u/");
        assert_eq!(url_of("not a key"), "not a key");
    }
}
