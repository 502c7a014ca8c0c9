//! What the origin serves: VOD titles, live channels and generic objects, and
//! how a request path resolves to content and the headers a packager sends.
//!
//! | path | what |
//! |---|---|
//! | `/vod/{title}/master.m3u8` | HLS master playlist |
//! | `/vod/{title}/{rendition}/index.m3u8` | VOD media playlist |
//! | `/vod/{title}/{rendition}/seg_{n}.ts` | MPEG-TS segment |
//! | `/vod/{title}/manifest.mpd` | DASH manifest (MPEG-2 TS profile) |
//! | `/live/{channel}/master.m3u8` | live master playlist |
//! | `/live/{channel}/{rendition}/index.m3u8` | sliding-window live playlist |
//! | `/live/{channel}/{rendition}/seg_{n}.ts` | live segment |
//! | `/obj/{any}?size=&cc=&vary=&surrogate=&set_cookie=&v=&type=&etag=&lm=` | deterministic object |
//!
//! On any path, `?cc=` replaces the `Cache-Control` sent.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::content::{fnv1a, splitmix64, Content};
use crate::h264::Picture;
use crate::playlist;
use crate::ts::{Segment, SegmentSpec};

/// One bitrate/size variant of a title or channel.
#[derive(Debug, Clone)]
pub struct Rendition {
    pub name: String,
    /// Bits per second; segment sizes follow bitrate × duration.
    pub bandwidth: u64,
    pub picture: Picture,
}

impl Rendition {
    pub fn new(name: &str, bandwidth: u64, width_mbs: u32, height_mbs: u32) -> Self {
        Self {
            name: name.to_string(),
            bandwidth,
            picture: Picture {
                width_mbs,
                height_mbs,
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct VodTitle {
    pub name: String,
    pub duration: Duration,
    pub segment_duration: Duration,
    pub renditions: Vec<Rendition>,
}

impl VodTitle {
    pub fn segment_count(&self) -> u64 {
        let total = self.duration.as_millis() as u64;
        let seg = self.segment_duration.as_millis().max(1) as u64;
        total.div_ceil(seg)
    }

    /// Duration of segment `i` (the last one may be shorter).
    pub fn segment_length(&self, i: u64) -> Duration {
        let seg = self.segment_duration;
        let start = seg * i as u32;
        self.duration.saturating_sub(start).min(seg)
    }
}

#[derive(Debug, Clone)]
pub struct LiveChannel {
    pub name: String,
    pub segment_duration: Duration,
    /// Low-Latency HLS part length (served under `/ll/`); `None`: no parts.
    pub part_duration: Option<Duration>,
    /// Segments listed in the playlist.
    pub window: u32,
    pub renditions: Vec<Rendition>,
}

impl LiveChannel {
    /// The newest complete segment at `now`, counted from the Unix epoch, so
    /// every origin (and every test) agrees on the live edge.
    pub fn latest(&self, now: SystemTime) -> u64 {
        let ms = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        (ms / self.segment_duration.as_millis().max(1) as u64).saturating_sub(1)
    }

    /// Oldest segment still served (a DVR window of ten playlists).
    pub fn oldest_served(&self, now: SystemTime) -> u64 {
        self.latest(now).saturating_sub(u64::from(self.window) * 10)
    }
}

/// Everything the origin serves.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub vod: Vec<VodTitle>,
    pub live: Vec<LiveChannel>,
    /// Last-Modified of VOD content.
    pub published: SystemTime,
}

impl Default for Catalog {
    /// Two VOD titles and one live channel, in three renditions; the top one
    /// makes 4 s segments of about 2 MiB.
    fn default() -> Self {
        let renditions = vec![
            Rendition::new("low", 400_000, 10, 6),
            Rendition::new("mid", 1_200_000, 20, 11),
            Rendition::new("high", 4_200_000, 30, 17),
        ];
        Catalog {
            vod: vec![
                VodTitle {
                    name: "bbb".into(),
                    duration: Duration::from_secs(600),
                    segment_duration: Duration::from_secs(4),
                    renditions: renditions.clone(),
                },
                VodTitle {
                    name: "sintel".into(),
                    duration: Duration::from_secs(90),
                    segment_duration: Duration::from_secs(6),
                    renditions: renditions.clone(),
                },
            ],
            live: vec![LiveChannel {
                name: "news".into(),
                segment_duration: Duration::from_secs(2),
                part_duration: Some(Duration::from_millis(500)),
                window: 6,
                renditions,
            }],
            // 2026-01-01T00:00:00Z
            published: UNIX_EPOCH + Duration::from_secs(1_767_225_600),
        }
    }
}

/// Kinds of requests, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    MasterPlaylist,
    MediaPlaylist,
    Segment,
    Manifest,
    Object,
    Echo,
    Control,
    Other,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::MasterPlaylist => "master_playlist",
            Class::MediaPlaylist => "media_playlist",
            Class::Segment => "segment",
            Class::Manifest => "manifest",
            Class::Object => "object",
            Class::Echo => "echo",
            Class::Control => "control",
            Class::Other => "other",
        }
    }
}

/// A resolved request: the body and the headers that describe it.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub class: Class,
    pub content: Content,
    pub content_type: &'static str,
    pub cache_control: String,
    pub etag: String,
    pub last_modified: SystemTime,
    pub extra_headers: Vec<(String, String)>,
    /// Status to answer with (200 normally; `/obj?status=` may set another).
    pub status: u16,
}

impl Resolved {
    /// An object with `vary=` differs by the value of each header it
    /// names, the way a server that varies would (`get` reads a request
    /// header by lower-case name).
    pub fn vary_by<'a>(&mut self, get: impl Fn(&str) -> Option<&'a str>) {
        let Content::Object { seed, len } = &mut self.content else {
            return;
        };
        let Some((_, names)) = self.extra_headers.iter().find(|(k, _)| k == "vary") else {
            return;
        };
        for name in names.split(',').map(|n| n.trim().to_ascii_lowercase()) {
            if let Some(v) = get(&name) {
                *seed = splitmix64(*seed ^ fnv1a(v));
            }
        }
        self.etag = etag(&[*seed, *len]);
    }
}

/// Why a path resolved to nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFound {
    NoSuchPath,
    /// A live segment that does not exist yet, or left the DVR window.
    OutsideLiveWindow,
    BadParameter(String),
}

const SEGMENT_CC: &str = "public, max-age=31536000, immutable";
const M3U8: &str = "application/vnd.apple.mpegurl";

fn etag(parts: &[u64]) -> String {
    let h = parts
        .iter()
        .fold(0x6A09_E667_F3BC_C908u64, |acc, p| splitmix64(acc ^ p));
    format!("\"{h:016x}\"")
}

fn static_text(text: String) -> Content {
    Content::Static(Bytes::from(text))
}

impl Catalog {
    fn title(&self, name: &str) -> Option<&VodTitle> {
        self.vod.iter().find(|t| t.name == name)
    }

    fn channel(&self, name: &str) -> Option<&LiveChannel> {
        self.live.iter().find(|c| c.name == name)
    }

    /// Resolves a request path and query at time `now`.
    pub fn resolve(&self, path: &str, query: &str, now: SystemTime) -> Result<Resolved, NotFound> {
        let mut r = self.resolve_path(path, query, now)?;
        // `?cc=` plays an origin that sends other caching headers than a
        // packager would (objects already take theirs from the query).
        if let Some(cc) = query_param(query, "cc") {
            r.cache_control = cc;
        }
        Ok(r)
    }

    fn resolve_path(&self, path: &str, query: &str, now: SystemTime) -> Result<Resolved, NotFound> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["vod", title, "master.m3u8"] => {
                let t = self.title(title).ok_or(NotFound::NoSuchPath)?;
                let text = playlist::hls_master(&t.renditions);
                Ok(self.vod_text(Class::MasterPlaylist, text, M3U8))
            }
            ["vod", title, "manifest.mpd"] => {
                let t = self.title(title).ok_or(NotFound::NoSuchPath)?;
                Ok(self.vod_text(
                    Class::Manifest,
                    playlist::dash_mpd(t),
                    "application/dash+xml",
                ))
            }
            ["vod", title, rendition, "index.m3u8"] => {
                let t = self.title(title).ok_or(NotFound::NoSuchPath)?;
                t.renditions
                    .iter()
                    .find(|r| r.name == *rendition)
                    .ok_or(NotFound::NoSuchPath)?;
                Ok(self.vod_text(Class::MediaPlaylist, playlist::hls_vod_media(t), M3U8))
            }
            ["vod", title, rendition, file] => {
                let t = self.title(title).ok_or(NotFound::NoSuchPath)?;
                let r = t
                    .renditions
                    .iter()
                    .find(|r| r.name == *rendition)
                    .ok_or(NotFound::NoSuchPath)?;
                let n = segment_number(file).ok_or(NotFound::NoSuchPath)?;
                if n >= t.segment_count() {
                    return Err(NotFound::NoSuchPath);
                }
                let seg_ms = t.segment_duration.as_millis() as u64;
                let length = t.segment_length(n);
                let seed = fnv1a(&format!("vod/{}/{}", t.name, r.name));
                let spec = SegmentSpec {
                    picture: r.picture,
                    index: n,
                    start_ticks: n * seg_ms * 90,
                    duration_ticks: length.as_millis() as u64 * 90,
                    target_bytes: r.bandwidth * length.as_millis() as u64 / 8000,
                    seed,
                };
                Ok(self.segment(spec, self.published))
            }
            ["live", channel, "master.m3u8"] => {
                let c = self.channel(channel).ok_or(NotFound::NoSuchPath)?;
                Ok(Resolved {
                    class: Class::MasterPlaylist,
                    etag: etag(&[fnv1a(path)]),
                    content: static_text(playlist::hls_master(&c.renditions)),
                    content_type: M3U8,
                    cache_control: "public, max-age=60".into(),
                    last_modified: self.published,
                    extra_headers: Vec::new(),
                    status: 200,
                })
            }
            ["live", channel, rendition, "index.m3u8"] => {
                let c = self.channel(channel).ok_or(NotFound::NoSuchPath)?;
                c.renditions
                    .iter()
                    .find(|r| r.name == *rendition)
                    .ok_or(NotFound::NoSuchPath)?;
                let last = c.latest(now);
                let first = last.saturating_sub(u64::from(c.window).saturating_sub(1));
                let seg = c.segment_duration;
                // A live playlist may be cached for half a target duration.
                let max_age = (seg.as_secs() / 2).max(1);
                Ok(Resolved {
                    class: Class::MediaPlaylist,
                    etag: etag(&[fnv1a(path), last]),
                    content: static_text(playlist::hls_live_media(c, first, last)),
                    content_type: M3U8,
                    cache_control: format!("public, max-age={max_age}"),
                    last_modified: UNIX_EPOCH + seg * (last as u32 + 1),
                    extra_headers: Vec::new(),
                    status: 200,
                })
            }
            ["live", channel, rendition, file] => {
                let c = self.channel(channel).ok_or(NotFound::NoSuchPath)?;
                let r = c
                    .renditions
                    .iter()
                    .find(|r| r.name == *rendition)
                    .ok_or(NotFound::NoSuchPath)?;
                let n = segment_number(file).ok_or(NotFound::NoSuchPath)?;
                if n > c.latest(now) || n < c.oldest_served(now) {
                    return Err(NotFound::OutsideLiveWindow);
                }
                let seg_ms = c.segment_duration.as_millis() as u64;
                let spec = SegmentSpec {
                    picture: r.picture,
                    index: n,
                    start_ticks: n * seg_ms * 90,
                    duration_ticks: seg_ms * 90,
                    target_bytes: r.bandwidth * seg_ms / 8000,
                    seed: fnv1a(&format!("live/{}/{}", c.name, r.name)),
                };
                let produced = UNIX_EPOCH + c.segment_duration * (n as u32 + 1);
                Ok(self.segment(spec, produced))
            }
            ["obj", ..] => object(path, query, self.published),
            _ => Err(NotFound::NoSuchPath),
        }
    }

    fn vod_text(&self, class: Class, text: String, content_type: &'static str) -> Resolved {
        Resolved {
            class,
            etag: etag(&[fnv1a(&text)]),
            content: static_text(text),
            content_type,
            cache_control: "public, max-age=3600".into(),
            last_modified: self.published,
            extra_headers: Vec::new(),
            status: 200,
        }
    }

    fn segment(&self, spec: SegmentSpec, last_modified: SystemTime) -> Resolved {
        let segment = Segment::build(&spec);
        Resolved {
            class: Class::Segment,
            etag: etag(&[spec.seed, spec.index, segment.len()]),
            content: Content::Segment(Arc::new(segment)),
            content_type: "video/mp2t",
            cache_control: SEGMENT_CC.into(),
            last_modified,
            extra_headers: Vec::new(),
            status: 200,
        }
    }
}

fn segment_number(file: &str) -> Option<u64> {
    file.strip_prefix("seg_")?.strip_suffix(".ts")?.parse().ok()
}

/// Percent-decodes a query component (`+` is a space).
pub fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of `name` in a query string.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode_component(k) == name).then(|| decode_component(v))
        })
        .next()
}

const MAX_OBJECT: u64 = 1 << 30;

/// `/obj/...`: a deterministic object whose headers the query chooses.
fn object(path: &str, query: &str, published: SystemTime) -> Result<Resolved, NotFound> {
    let size = match query_param(query, "size") {
        Some(s) => s
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= MAX_OBJECT)
            .ok_or_else(|| {
                NotFound::BadParameter(format!("size={s}: a number of bytes up to {MAX_OBJECT}"))
            })?,
        None => 1024,
    };
    let version = query_param(query, "v").unwrap_or_default();
    let seed = fnv1a(&format!("{path}#{version}"));
    let content_type = match path.rsplit('.').next() {
        Some("ts") => "video/mp2t",
        Some("m4s") => "video/iso.segment",
        Some("mp4") => "video/mp4",
        Some("m3u8") => M3U8,
        Some("mpd") => "application/dash+xml",
        Some("json") => "application/json",
        Some("txt") => "text/plain",
        _ => "application/octet-stream",
    };
    let mut extra = Vec::new();
    if let Some(v) = query_param(query, "vary") {
        extra.push(("vary".to_string(), v));
    }
    if let Some(v) = query_param(query, "surrogate") {
        extra.push(("surrogate-key".to_string(), v));
    }
    if query_param(query, "set_cookie").is_some() {
        extra.push((
            "set-cookie".to_string(),
            format!("session={:08x}; Path=/", seed as u32),
        ));
    }
    if let Some(v) = query_param(query, "expires") {
        extra.push(("expires".to_string(), v));
    }
    let status = match query_param(query, "status") {
        Some(s) => s
            .parse::<u16>()
            .ok()
            .filter(|s| (200..600).contains(s))
            .ok_or_else(|| NotFound::BadParameter(format!("status={s}")))?,
        None => 200,
    };
    let last_modified = match query_param(query, "lm") {
        Some(secs) => {
            UNIX_EPOCH
                + Duration::from_secs(
                    secs.parse()
                        .map_err(|_| NotFound::BadParameter(format!("lm={secs}")))?,
                )
        }
        None => published,
    };
    Ok(Resolved {
        class: Class::Object,
        etag: query_param(query, "etag")
            .map(|e| format!("\"{e}\""))
            .unwrap_or_else(|| etag(&[seed, size])),
        content: Content::Object { seed, len: size },
        content_type,
        cache_control: query_param(query, "cc").unwrap_or_else(|| "public, max-age=60".into()),
        last_modified,
        extra_headers: extra,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn vod_segments_follow_bitrate_times_duration() {
        let c = Catalog::default();
        let r = c.resolve("/vod/bbb/high/seg_3.ts", "", now()).unwrap();
        let expected = 4_200_000 * 4 / 8;
        let len = r.content.len();
        assert!(len >= expected && len < expected + 188, "{len}");
        assert_eq!(r.cache_control, SEGMENT_CC);
        assert_eq!(
            c.resolve("/vod/bbb/high/seg_150.ts", "", now())
                .unwrap_err(),
            NotFound::NoSuchPath
        );
        // 90 s in 6 s segments: 15, the last one full.
        assert_eq!(c.vod[1].segment_count(), 15);
    }

    #[test]
    fn live_window_slides_with_the_clock() {
        let c = Catalog::default();
        let a = c.resolve("/live/news/low/index.m3u8", "", now()).unwrap();
        let later = c
            .resolve(
                "/live/news/low/index.m3u8",
                "",
                now() + Duration::from_secs(4),
            )
            .unwrap();
        let seq = |r: &Resolved| {
            let text = String::from_utf8(r.content.to_bytes().to_vec()).unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        assert_eq!(seq(&later), seq(&a) + 2);
        assert_ne!(a.etag, later.etag);
        let latest = c.live[0].latest(now());
        assert!(c
            .resolve(&format!("/live/news/low/seg_{latest}.ts"), "", now())
            .is_ok());
        assert_eq!(
            c.resolve(&format!("/live/news/low/seg_{}.ts", latest + 1), "", now())
                .unwrap_err(),
            NotFound::OutsideLiveWindow
        );
    }

    #[test]
    fn objects_take_their_headers_from_the_query() {
        let c = Catalog::default();
        let r = c
            .resolve(
                "/obj/a.ts",
                "size=100&cc=no-store&vary=Accept-Encoding&surrogate=k1%20k2",
                now(),
            )
            .unwrap();
        assert_eq!(r.content.len(), 100);
        assert_eq!(r.cache_control, "no-store");
        assert_eq!(r.content_type, "video/mp2t");
        assert!(r
            .extra_headers
            .contains(&("surrogate-key".into(), "k1 k2".into())));
        assert!(c.resolve("/obj/x", "size=lots", now()).is_err());
    }

    #[test]
    fn query_decoding() {
        assert_eq!(decode_component("a%20b+c"), "a b c");
        assert_eq!(decode_component("100%"), "100%");
        assert_eq!(decode_component("%zz"), "%zz");
        assert_eq!(query_param("a=1&b=x%3Dy", "b").as_deref(), Some("x=y"));
    }
}
