//! The cache's fields on a response to a client, the same on every path
//! (pingora-cache, the fast RAM path, slices):
//!
//! ```text
//! Age            current_age of what the cache served (RFC 9111 §4.2.3, §5.1);
//!                a forwarded response keeps the upstream's, else 0
//! Cache-Status   this cache's member, appended (RFC 9211): hit; ttl=…,
//!                fwd=uri-miss|stale|request|bypass; fwd-status=…; stored;
//!                collapsed; key=…
//! X-Cache        HIT RAM, MISS, … (kept for tools that read it)
//! CDN-Cache-Control and the other targeted fields: removed unless
//!                `forward_targeted_fields` (RFC 9213 §2.1)
//! Cache-Control  on a live playlist, max-age and s-maxage capped at the
//!                playlist's own lifetime, so players' caches follow it
//! ```

use std::time::SystemTime;

use edge_cache::video::Kind;
use edge_cache::{Status, Tier};
use edge_config::Cache;
use http::header;
use pingora_error::Result;
use pingora_http::ResponseHeader;

use super::x_cache;

/// What the cache knows about the response being sent.
pub(crate) struct Served<'a> {
    pub status: Status,
    pub tier: Option<Tier>,
    /// The stored object's freshness: (`fresh_until`, epoch), when one was
    /// served, stored or updated.
    pub stored: Option<(SystemTime, SystemTime)>,
    /// The response was (or will be) stored.
    pub storing: bool,
    /// The upstream status, when the request was forwarded.
    pub fwd_status: Option<u16>,
    /// Why the request was forwarded, when not a plain miss.
    pub fwd: Option<&'static str>,
    /// The URL part of the key.
    pub key: &'a str,
    pub kind: Kind,
}

impl<'a> Served<'a> {
    /// A fresh hit from RAM of the stored head `parsed`, whose key's URL is
    /// `key`.
    pub(crate) fn ram_hit(parsed: &edge_cache::object::Parsed, key: &'a str, kind: Kind) -> Self {
        Self {
            status: Status::Hit,
            tier: Some(Tier::Ram),
            stored: Some((parsed.fresh_until(), parsed.updated())),
            storing: false,
            fwd_status: None,
            fwd: None,
            key,
            kind,
        }
    }
}

fn secs_between(later: SystemTime, earlier: SystemTime) -> i64 {
    match later.duration_since(earlier) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Appends an RFC 8941 sf-string of `s` (non-printable bytes dropped).
fn push_sf_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    // Runs of printable ASCII are copied whole (a char at a time, a hit's
    // `Cache-Status` took 1,424 instructions, 1,019 now; instr.sh). Bytes outside
    // ' '..='~' are dropped: every byte of a multi-byte UTF-8 character is
    // >= 0x80, so what is dropped is whole characters and the runs cut at
    // ASCII bytes are `str` boundaries.
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\' {
            continue;
        }
        if run < i {
            // All printable ASCII: both ends are character boundaries.
            out.push_str(&s[run..i]);
        }
        if b == b'"' || b == b'\\' {
            out.push('\\');
            out.push(char::from(b));
        }
        run = i + 1;
        // A multi-byte character's later bytes are dropped on the next turns
        // (`run == i` then: nothing is sliced there).
    }
    if run < bytes.len() {
        out.push_str(&s[run..]);
    }
    out.push('"');
}

/// This cache's `Cache-Status` member (RFC 9211 §2).
pub(crate) fn cache_status(name: &str, s: &Served<'_>, now: SystemTime) -> String {
    // One allocation, written in place (with `format!` per member the
    // fields of a hit took about 5,800 instructions; numbers by `itoa`).
    let mut v = String::with_capacity(name.len() + s.key.len() + 40);
    cache_status_before_ttl(&mut v, name, s);
    if let Some(ttl) = cache_status_ttl(s, now) {
        v.push_str("; ttl=");
        v.push_str(itoa::Buffer::new().format(ttl));
    }
    cache_status_after_ttl(&mut v, s);
    v
}

/// The `ttl` parameter of [`cache_status`] (RFC 9211 §2.7: the stored
/// response's remaining freshness lifetime, in seconds; negative when
/// stale), `None` when it has none.
pub(crate) fn cache_status_ttl(s: &Served<'_>, now: SystemTime) -> Option<i64> {
    if s.status == Status::Bypass {
        return None;
    }
    s.stored
        .map(|(fresh_until, _)| secs_between(fresh_until, now))
}

/// [`cache_status`] before its `ttl` parameter: the cache's name, `hit`
/// or `fwd` and `fwd-status` (RFC 9211 §2.1–2.3); what it says for one
/// stored object does not change from hit to hit (`h1_head::Memo`).
pub(crate) fn cache_status_before_ttl(v: &mut String, name: &str, s: &Served<'_>) {
    v.push_str(name);
    match s.status {
        Status::Bypass => v.push_str("; fwd=bypass"),
        Status::Hit if s.tier == Some(Tier::Fill) => v.push_str("; fwd=uri-miss; collapsed"),
        Status::Hit | Status::Stale => v.push_str("; hit"),
        Status::Revalidated => v.push_str("; fwd=stale"),
        Status::Miss => {
            v.push_str("; fwd=");
            v.push_str(s.fwd.unwrap_or("uri-miss"));
        }
    }
    let forwarded = matches!(
        s.status,
        Status::Miss | Status::Revalidated | Status::Bypass
    );
    if let Some(code) = s.fwd_status.filter(|_| forwarded) {
        v.push_str("; fwd-status=");
        v.push_str(itoa::Buffer::new().format(code));
    }
}

/// [`cache_status`] after its `ttl` parameter: `stored` and `key`
/// (RFC 9211 §2.6, §2.8); likewise the same from hit to hit.
pub(crate) fn cache_status_after_ttl(v: &mut String, s: &Served<'_>) {
    if s.status != Status::Bypass {
        if s.storing && s.status == Status::Miss {
            v.push_str("; stored");
        }
        v.push_str("; key=");
        push_sf_string(v, s.key);
    }
}

/// `max-age` and `s-maxage` of a `Cache-Control` value capped at `cap` seconds.
pub(super) fn cap_max_age(value: &str, cap: u64) -> String {
    value
        .split(',')
        .map(|d| {
            let t = d.trim();
            match t.split_once('=') {
                Some((k, n))
                    if (k.trim().eq_ignore_ascii_case("max-age")
                        || k.trim().eq_ignore_ascii_case("s-maxage"))
                        && n.trim()
                            .trim_matches('"')
                            .parse::<u64>()
                            .is_ok_and(|n| n > cap) =>
                {
                    format!("{}={cap}", k.trim().to_ascii_lowercase())
                }
                _ => t.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The current_age (RFC 9111 §4.2.3) of what was served or is being
/// stored, in seconds; `None` when nothing stored is involved (a forwarded
/// response keeps the upstream's `Age`, else gets 0).
pub(super) fn current_age(s: &Served<'_>, now: SystemTime) -> Option<u64> {
    let (_, epoch) = s
        .stored
        .filter(|_| super::from_cache(s.status) || s.storing)?;
    Some(now.duration_since(epoch).map_or(0, |d| d.as_secs()))
}

/// For a playlist or manifest, the cap on its `max-age` and `s-maxage`, in
/// seconds: a stored one's lifetime (live ones are capped when their body
/// is seen), or the live cap when not yet known (a miss: the playlist is
/// assumed live until its body says otherwise). `None` for other kinds.
pub(super) fn playlist_cap(s: &Served<'_>, settings: &Cache) -> Option<u64> {
    if !matches!(s.kind, Kind::HlsPlaylist | Kind::DashManifest) {
        return None;
    }
    Some(match s.stored.filter(|_| super::from_cache(s.status)) {
        Some((fresh_until, epoch)) => secs_between(fresh_until, epoch).max(0) as u64,
        None => settings.video.live_playlist_max_ttl.as_secs(),
    })
}

/// Sets the cache's fields on `resp` (see the module docs).
pub(crate) fn apply(
    resp: &mut ResponseHeader,
    s: &Served<'_>,
    settings: &Cache,
    now: SystemTime,
) -> Result<()> {
    match current_age(s, now) {
        Some(age) => {
            resp.insert_header(header::AGE, age.to_string())?;
        }
        None if !resp.headers.contains_key(header::AGE) => {
            resp.insert_header(header::AGE, "0")?;
        }
        None => {}
    }
    resp.insert_header(
        crate::names::X_CACHE,
        http::HeaderValue::from_static(x_cache(s.status, s.tier)),
    )?;
    resp.append_header(
        crate::names::CACHE_STATUS,
        cache_status(&settings.status_name, s, now),
    )?;
    if !settings.forward_targeted_fields {
        for name in &settings.targeted_fields {
            resp.remove_header(name.as_str());
        }
    }
    if let Some(cap) = playlist_cap(s, settings) {
        let capped: Vec<String> = resp
            .headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| cap_max_age(v, cap))
            .collect();
        if !capped.is_empty() {
            resp.remove_header(&header::CACHE_CONTROL);
            for v in capped {
                resp.append_header(header::CACHE_CONTROL, v)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The rule char by char (RFC 8941 §3.3.3: `"` and `\\` escaped,
    /// printable ASCII kept; here, anything else dropped).
    fn sf_string_reference(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                ' '..='~' => out.push(c),
                _ => {}
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn sf_strings_escape_quotes_and_backslashes_and_drop_the_rest() {
        let pieces = [
            "",
            "a",
            "\"",
            "\\",
            "é",
            "日本",
            "\u{1F600}",
            "\t",
            "\r\n",
            "\x7f",
            " ",
            "~",
            "example.com/v/seg-1.ts?x=1",
            "\u{80}",
            "ÿ",
        ];
        // Every pair and triple of pieces, so runs start and end at each kind.
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let s = format!("{a}{b}{c}");
                    let mut out = String::new();
                    push_sf_string(&mut out, &s);
                    assert_eq!(out, sf_string_reference(&s), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn max_age_is_capped_and_the_rest_kept() {
        assert_eq!(
            cap_max_age("public, max-age=86400, s-maxage=600", 1),
            "public, max-age=1, s-maxage=1"
        );
        assert_eq!(cap_max_age("max-age=0, no-cache", 1), "max-age=0, no-cache");
        assert_eq!(cap_max_age("Max-Age=\"30\"", 2), "max-age=2");
        assert_eq!(cap_max_age("max-age=abc", 2), "max-age=abc");
    }

    #[test]
    fn cache_status_members() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let base = Served {
            status: Status::Hit,
            tier: Some(Tier::Ram),
            stored: Some((now + Duration::from_secs(50), now - Duration::from_secs(10))),
            storing: false,
            fwd_status: None,
            fwd: None,
            key: "a.test/x?\"q\"",
            kind: Kind::Other,
        };
        assert_eq!(
            cache_status("edge", &base, now),
            r#"edge; hit; ttl=50; key="a.test/x?\"q\"""#
        );
        let miss = Served {
            status: Status::Miss,
            storing: true,
            fwd_status: Some(200),
            ..base
        };
        assert_eq!(
            cache_status("edge", &miss, now),
            r#"edge; fwd=uri-miss; fwd-status=200; ttl=50; stored; key="a.test/x?\"q\"""#
        );
        let stale = Served {
            status: Status::Stale,
            stored: Some((now - Duration::from_secs(5), now - Duration::from_secs(65))),
            ..miss
        };
        assert_eq!(
            cache_status("edge", &stale, now),
            r#"edge; hit; ttl=-5; key="a.test/x?\"q\"""#
        );
        let bypass = Served {
            status: Status::Bypass,
            ..miss
        };
        assert_eq!(
            cache_status("edge", &bypass, now),
            "edge; fwd=bypass; fwd-status=200"
        );
    }
}
