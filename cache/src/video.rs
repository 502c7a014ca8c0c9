//! Video awareness: recognizing HLS and DASH by extension and content type,
//! reading playlists (live or VOD, target duration, segment order), and
//! remembering which segment follows which so the next ones can be
//! prefetched.

use std::sync::Arc;
use std::time::Duration;

/// What kind of object a response is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    HlsPlaylist,
    DashManifest,
    Segment,
    Other,
}

/// Classifies by path extension, falling back to the content type (both
/// compared without regard to ASCII case, without allocating: this runs on
/// every RAM hit).
pub fn classify(path: &str, content_type: Option<&str>) -> Kind {
    const PLAYLISTS: [&str; 2] = ["m3u8", "m3u"];
    const SEGMENTS: [&str; 10] = [
        "ts", "m4s", "mp4", "m4v", "m4a", "aac", "cmfv", "cmfa", "vtt", "webm",
    ];
    let ext = path
        .rsplit('/')
        .next()
        .and_then(|f| f.rsplit_once('.'))
        .map(|(_, e)| e);
    if let Some(ext) = ext {
        let is = |names: &[&str]| names.iter().any(|n| n.eq_ignore_ascii_case(ext));
        if is(&PLAYLISTS) {
            return Kind::HlsPlaylist;
        }
        if ext.eq_ignore_ascii_case("mpd") {
            return Kind::DashManifest;
        }
        if is(&SEGMENTS) {
            return Kind::Segment;
        }
    }
    let ct = content_type.unwrap_or("").as_bytes();
    let contains = |needle: &[u8]| {
        ct.windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    let starts = |prefix: &[u8]| {
        ct.get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    if contains(b"mpegurl") {
        Kind::HlsPlaylist
    } else if contains(b"dash+xml") {
        Kind::DashManifest
    } else if starts(b"video/") || starts(b"audio/") {
        Kind::Segment
    } else {
        Kind::Other
    }
}

/// What a playlist says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaylistInfo {
    /// A live playlist grows; a VOD one is complete.
    pub live: bool,
    /// HLS target duration, or DASH minimum update period.
    pub refresh: Option<Duration>,
    /// Segment URIs in order (HLS media playlists only), as written.
    pub segments: Vec<String>,
    /// LL-HLS `EXT-X-PART-INF:PART-TARGET`.
    pub part_target: Option<Duration>,
    /// LL-HLS `EXT-X-PRELOAD-HINT` of type PART: the next part's URI, as written.
    pub preload_hint: Option<String>,
}

/// The value of attribute `name` in an attribute list (`A=1,B="x,y"`).
fn attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = list;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let (v, tail) = quoted.split_once('"')?;
            (v, tail.strip_prefix(',').unwrap_or(tail))
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        if key.trim() == name {
            return Some(value);
        }
        rest = next;
    }
    None
}

/// Reads an HLS media or master playlist.
pub fn parse_hls(body: &str) -> PlaylistInfo {
    let mut target = None;
    let mut endlist = false;
    let mut vod = false;
    let mut master = false;
    let mut segments = Vec::new();
    let mut next_is_segment = false;
    let mut part_target = None;
    let mut preload_hint = None;
    for line in body.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:") {
            part_target = attribute(v, "PART-TARGET")
                .and_then(|t| t.trim().parse::<f64>().ok())
                .filter(|t| t.is_finite() && *t > 0.0)
                .and_then(|t| Duration::try_from_secs_f64(t).ok());
        } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            if attribute(v, "TYPE") == Some("PART") {
                preload_hint = attribute(v, "URI").map(str::to_string);
            }
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            target = v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|t| t.is_finite() && *t > 0.0);
        } else if line == "#EXT-X-ENDLIST" {
            endlist = true;
        } else if line == "#EXT-X-PLAYLIST-TYPE:VOD" {
            vod = true;
        } else if line.starts_with("#EXT-X-STREAM-INF") {
            master = true;
        } else if line.starts_with("#EXTINF") {
            next_is_segment = true;
        } else if !line.is_empty() && !line.starts_with('#') && next_is_segment {
            segments.push(line.to_string());
            next_is_segment = false;
        }
    }
    PlaylistInfo {
        // A master playlist lists renditions, not segments: it does not
        // change like a live media playlist does.
        live: !(endlist || vod || master),
        // `try_`: an absurd target duration (1e300) is no duration, not a panic.
        refresh: target.and_then(|t| Duration::try_from_secs_f64(t).ok()),
        segments,
        part_target,
        preload_hint,
    }
}

/// Reads the attributes of a DASH MPD that decide how long it may be cached.
pub fn parse_mpd(body: &str) -> PlaylistInfo {
    let head = body.split_once("<MPD").map_or("", |(_, rest)| rest);
    let head = head.split_once('>').map_or(head, |(attrs, _)| attrs);
    let attr = |name: &str| -> Option<&str> {
        let at = head.find(&format!("{name}=\""))?;
        let rest = &head[at + name.len() + 2..];
        rest.split_once('"').map(|(v, _)| v)
    };
    PlaylistInfo {
        live: attr("type") == Some("dynamic"),
        refresh: attr("minimumUpdatePeriod").and_then(iso8601_duration),
        segments: Vec::new(),
        part_target: None,
        preload_hint: None,
    }
}

/// `PT2S`, `PT1M30.5S`, `PT1H` (the subset DASH uses).
pub fn iso8601_duration(s: &str) -> Option<Duration> {
    let t = s.strip_prefix("PT")?;
    let mut total = 0.0;
    let mut num = String::new();
    for c in t.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'H' | 'M' | 'S' => {
                let n: f64 = num.parse().ok()?;
                total += n * match c {
                    'H' => 3600.0,
                    'M' => 60.0,
                    _ => 1.0,
                };
                num.clear();
            }
            _ => return None,
        }
    }
    if !num.is_empty() {
        return None;
    }
    // Beyond what a Duration holds (`PT99999999999999999999H`): none.
    Duration::try_from_secs_f64(total).ok()
}

/// Resolves a playlist entry against the playlist's path (both without host).
pub fn resolve(playlist_path: &str, uri: &str) -> Option<String> {
    if uri.contains("://") {
        // Absolute URLs to other hosts are not prefetched.
        return None;
    }
    if uri.starts_with('/') {
        return Some(uri.to_string());
    }
    let dir = playlist_path.rsplit_once('/').map_or("", |(d, _)| d);
    let mut parts: Vec<&str> = dir.split('/').collect();
    for seg in uri.split('/') {
        match seg {
            ".." => {
                if parts.len() > 1 {
                    parts.pop();
                }
            }
            "." => {}
            s => parts.push(s),
        }
    }
    Some(parts.join("/"))
}

/// Which segments follow which, learned from playlists that passed through.
/// Bounded: the least recently used entries go first.
pub struct Successors {
    next: moka::sync::Cache<String, Arc<Vec<String>>>,
    /// LL-HLS playlists by `host` + path: part target and the hinted part
    /// (resolved path, with its query).
    low_latency: moka::sync::Cache<String, Arc<LowLatency>>,
    /// DASH `$Number$` templates (resolved paths) by `host` + the directory
    /// their segments are in: live MPDs whose list has no end.
    numbered: moka::sync::Cache<String, Arc<Vec<String>>>,
}

/// What an LL-HLS playlist said last.
#[derive(Debug, Clone, PartialEq)]
pub struct LowLatency {
    pub part_target: Option<Duration>,
    pub preload_hint: Option<String>,
}

/// Segments remembered after each segment.
const REMEMBERED: usize = 8;

impl Successors {
    pub fn new(capacity: u64) -> Self {
        Self {
            next: moka::sync::Cache::new(capacity),
            low_latency: moka::sync::Cache::new(capacity / 16 + 16),
            numbered: moka::sync::Cache::new(capacity / 16 + 16),
        }
    }

    /// Learns from a DASH MPD at `host` + `path`: each Representation's
    /// segments in order, and its `$Number$` template when the list is
    /// open-ended (a live MPD).
    pub fn learn_dash(&self, host: &str, path: &str, body: &str) {
        let Ok(reps) = crate::manifest::dash_representations(body) else {
            return;
        };
        for rep in reps {
            self.learn_order(host, path, &rep.segments);
            if let Some(template) = rep.number_template.and_then(|t| resolve(path, &t)) {
                let dir = template.rsplit_once('/').map_or("", |(d, _)| d);
                let key = format!("{host}{dir}/");
                let mut list: Vec<String> = self
                    .numbered
                    .get(&key)
                    .map(|l| l.as_ref().clone())
                    .unwrap_or_default();
                if !list.contains(&template) {
                    list.push(template);
                    // A directory holds a few Representations' templates at most.
                    if list.len() > 32 {
                        list.remove(0);
                    }
                    self.numbered.insert(key, Arc::new(list));
                }
            }
        }
    }

    /// What the LL-HLS playlist at `host` + `path` said last, if it was one.
    pub fn low_latency(&self, host: &str, path: &str) -> Option<Arc<LowLatency>> {
        self.low_latency.get(&format!("{host}{path}"))
    }

    /// Learns from a media playlist at `host` + `path`. Keys are `host` +
    /// segment path (without query); values keep the query as written.
    pub fn learn(&self, host: &str, path: &str, info: &PlaylistInfo) {
        self.learn_low_latency(host, path, info);
        self.learn_order(host, path, &info.segments);
    }

    fn learn_low_latency(&self, host: &str, path: &str, info: &PlaylistInfo) {
        if info.part_target.is_some() || info.preload_hint.is_some() {
            let ll = LowLatency {
                part_target: info.part_target,
                preload_hint: info.preload_hint.as_deref().and_then(|u| resolve(path, u)),
            };
            self.low_latency
                .insert(format!("{host}{path}"), Arc::new(ll));
        }
    }

    /// Remembers, for each of `segments` (URIs relative to `path`), the
    /// ones after it.
    fn learn_order(&self, host: &str, path: &str, segments: &[String]) {
        let resolved: Vec<String> = segments.iter().filter_map(|u| resolve(path, u)).collect();
        for (i, seg) in resolved.iter().enumerate() {
            let following: Vec<String> =
                resolved[i + 1..].iter().take(REMEMBERED).cloned().collect();
            if !following.is_empty() {
                let path = seg.split('?').next().unwrap_or(seg);
                self.next
                    .insert(format!("{host}{path}"), Arc::new(following));
            }
        }
    }

    /// Up to `k` segment paths (with their query) after `host` + `path`.
    pub fn after(&self, host: &str, path: &str, k: usize) -> Vec<String> {
        if let Some(v) = self.next.get(&format!("{host}{path}")) {
            return v.iter().take(k).cloned().collect();
        }
        // A live DASH segment: the next numbers by its template.
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        let Some(templates) = self.numbered.get(&format!("{host}{dir}/")) else {
            return Vec::new();
        };
        templates
            .iter()
            .find_map(|t| {
                let (n, width) = crate::manifest::number_in(t, path)?;
                (1..=k as u64)
                    .map(|i| crate::manifest::numbered(t, n.checked_add(i)?, width))
                    .collect::<Option<Vec<String>>>()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify("/a/b/index.m3u8", None), Kind::HlsPlaylist);
        assert_eq!(classify("/a/manifest.mpd", None), Kind::DashManifest);
        assert_eq!(classify("/a/seg_1.ts", None), Kind::Segment);
        assert_eq!(classify("/a/chunk.m4s", None), Kind::Segment);
        assert_eq!(
            classify("/a/x", Some("application/vnd.apple.mpegurl")),
            Kind::HlsPlaylist
        );
        assert_eq!(classify("/a/x", Some("video/mp2t")), Kind::Segment);
        assert_eq!(classify("/a/x.html", Some("text/html")), Kind::Other);
    }

    #[test]
    fn classification_ignores_ascii_case_and_looks_at_the_last_segment_only() {
        for (path, ct, kind) in [
            ("/a/INDEX.M3U8", None, Kind::HlsPlaylist),
            ("/a/list.M3u", None, Kind::HlsPlaylist),
            ("/a/Manifest.MPD", None, Kind::DashManifest),
            ("/a/v.WebM", None, Kind::Segment),
            ("/a/p.CMFV", None, Kind::Segment),
            ("/a/t.Vtt", None, Kind::Segment),
            // The extension is the last segment's; a directory's dot is not.
            ("/a.m3u8/x", None, Kind::Other),
            ("/a.ts/x", Some("text/plain"), Kind::Other),
            ("/a/x.", None, Kind::Other),
            ("/a/x.tsx", None, Kind::Other),
            ("/a/x.m3u88", None, Kind::Other),
            // Then the content type, any case, a parameter or not.
            ("/a/x", Some("Application/X-MPEGURL"), Kind::HlsPlaylist),
            (
                "/a/x",
                Some("audio/mpegURL; charset=utf-8"),
                Kind::HlsPlaylist,
            ),
            ("/a/x", Some("application/DASH+XML"), Kind::DashManifest),
            ("/a/x", Some("VIDEO/mp4"), Kind::Segment),
            ("/a/x", Some("Audio/aac"), Kind::Segment),
            ("/a/x", Some("text/video/"), Kind::Other),
            ("/a/x", Some("video"), Kind::Other),
            ("/a/x", Some(""), Kind::Other),
            ("/a/x", Some("é/ü"), Kind::Other),
            ("/a/x.é", Some("vidéo/"), Kind::Other),
            // The extension wins over the content type.
            ("/a/x.mpd", Some("video/mp4"), Kind::DashManifest),
        ] {
            assert_eq!(classify(path, ct), kind, "{path} {ct:?}");
        }
    }

    #[test]
    fn hls_live_and_vod() {
        let live = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n#EXTINF:2.000,\nseg_10.ts\n#EXTINF:2.000,\nseg_11.ts\n";
        let i = parse_hls(live);
        assert!(i.live);
        assert_eq!(i.refresh, Some(Duration::from_secs(2)));
        assert_eq!(i.segments, vec!["seg_10.ts", "seg_11.ts"]);
        let vod = format!("{live}#EXT-X-ENDLIST\n");
        assert!(!parse_hls(&vod).live);
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nlow/index.m3u8\n";
        assert!(!parse_hls(master).live);
        assert!(parse_hls(master).segments.is_empty());
    }

    #[test]
    fn ll_hls_part_target_and_preload_hint() {
        let pl = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.5\n#EXT-X-PART-INF:PART-TARGET=0.5\n#EXT-X-MEDIA-SEQUENCE:5\n#EXTINF:2.0,\nseg_5.ts\n#EXT-X-PART:DURATION=0.5,URI=\"seg_6.0.ts\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg_6.1.ts?x=1\"\n";
        let i = parse_hls(pl);
        assert_eq!(i.part_target, Some(Duration::from_millis(500)));
        assert_eq!(i.preload_hint.as_deref(), Some("seg_6.1.ts?x=1"));
        let s = Successors::new(100);
        s.learn("h", "/ll/c/low/index.m3u8", &i);
        let ll = s.low_latency("h", "/ll/c/low/index.m3u8").unwrap();
        assert_eq!(ll.preload_hint.as_deref(), Some("/ll/c/low/seg_6.1.ts?x=1"));
        assert!(s.low_latency("h", "/other.m3u8").is_none());
        // A map hint is not a part; hostile attributes are not a panic.
        let map =
            "#EXT-X-PRELOAD-HINT:TYPE=MAP,URI=\"init.mp4\"\n#EXT-X-PART-INF:PART-TARGET=1e400\n";
        let i = parse_hls(map);
        assert_eq!((i.preload_hint, i.part_target), (None, None));
        for junk in [
            "#EXT-X-PRELOAD-HINT:URI=\"",
            "#EXT-X-PRELOAD-HINT:=,=,\"",
            "#EXT-X-PART-INF:PART-TARGET=-1",
            "#EXT-X-PART-INF:",
        ] {
            let i = parse_hls(junk);
            assert_eq!((i.preload_hint, i.part_target), (None, None), "{junk}");
        }
    }

    #[test]
    fn dash_segments_are_followed_by_list_and_by_number() {
        let s = Successors::new(1000);
        let vod = r#"<MPD type="static" mediaPresentationDuration="PT8S"><Period><AdaptationSet>
            <SegmentTemplate media="$RepresentationID$/t_$Time$.m4s" initialization="$RepresentationID$/init.mp4" timescale="1000">
              <SegmentTimeline><S t="0" d="2000" r="3"/></SegmentTimeline></SegmentTemplate>
            <Representation id="v1" bandwidth="1"/><Representation id="v2" bandwidth="2"/>
            </AdaptationSet></Period></MPD>"#;
        s.learn_dash("h", "/vod/t/manifest.mpd", vod);
        assert_eq!(
            s.after("h", "/vod/t/v1/t_2000.m4s", 2),
            ["/vod/t/v1/t_4000.m4s", "/vod/t/v1/t_6000.m4s"]
        );
        assert_eq!(s.after("h", "/vod/t/v2/init.mp4", 1), ["/vod/t/v2/t_0.m4s"]);
        assert!(s.after("h", "/vod/t/v1/t_6000.m4s", 2).is_empty());
        let live = r#"<MPD type="dynamic" availabilityStartTime="2026-01-01T00:00:00Z"><Period start="PT0S"><AdaptationSet>
            <SegmentTemplate media="live_$RepresentationID$_$Number%05d$.m4s" startNumber="1" duration="2" timescale="1"/>
            <Representation id="hd" bandwidth="5"/></AdaptationSet></Period></MPD>"#;
        s.learn_dash("h", "/live/ch/manifest.mpd", live);
        assert_eq!(
            s.after("h", "/live/ch/live_hd_00041.m4s", 3),
            [
                "/live/ch/live_hd_00042.m4s",
                "/live/ch/live_hd_00043.m4s",
                "/live/ch/live_hd_00044.m4s"
            ]
        );
        assert!(s.after("h", "/live/ch/live_sd_00041.m4s", 1).is_empty());
        assert!(s.after("h", "/live/ch/live_hd_x.m4s", 1).is_empty());
        assert!(s
            .after("h", "/live/ch/live_hd_18446744073709551615.m4s", 1)
            .is_empty());
        // Not an MPD, or a hostile one: nothing learned, no panic.
        s.learn_dash("h", "/x.mpd", "<MPD");
        s.learn_dash("h", "/x.mpd", r#"<MPD type="dynamic"><Period><AdaptationSet><SegmentTemplate media="$Number%0999999999d$"/><Representation id="a"/></AdaptationSet></Period></MPD>"#);
    }

    #[test]
    fn dash() {
        let d = r#"<?xml version="1.0"?><MPD type="dynamic" minimumUpdatePeriod="PT4S" profiles="x"><Period/></MPD>"#;
        let i = parse_mpd(d);
        assert!(i.live);
        assert_eq!(i.refresh, Some(Duration::from_secs(4)));
        assert!(!parse_mpd(r#"<MPD type="static">"#).live);
        assert_eq!(
            iso8601_duration("PT1M30.5S"),
            Some(Duration::from_millis(90_500))
        );
        assert_eq!(iso8601_duration("P1D"), None);
    }

    /// Numbers from an origin's playlist no Duration can hold are no
    /// duration at all: the response path reads them and must not panic.
    #[test]
    fn absurd_durations_are_none_not_a_panic() {
        assert_eq!(iso8601_duration("PT99999999999999999999999H"), None);
        assert_eq!(iso8601_duration("PT1.2.3S"), None);
        assert_eq!(iso8601_duration("PT."), None);
        let d = r#"<MPD type="dynamic" minimumUpdatePeriod="PT999999999999999999999S">"#;
        assert_eq!(parse_mpd(d).refresh, None);
        let live = "#EXTM3U\n#EXT-X-TARGETDURATION:1e300\n#EXTINF:2,\ns.ts\n";
        assert_eq!(parse_hls(live).refresh, None);
        assert!(parse_hls(live).live);
    }

    #[test]
    fn successors_follow_the_playlist() {
        let s = Successors::new(100);
        let info = parse_hls("#EXTM3U\n#EXTINF:4,\nseg_0.ts\n#EXTINF:4,\nseg_1.ts\n#EXTINF:4,\n../other/seg_2.ts\n#EXT-X-ENDLIST\n");
        s.learn("h", "/vod/t/low/index.m3u8", &info);
        assert_eq!(
            s.after("h", "/vod/t/low/seg_0.ts", 2),
            vec!["/vod/t/low/seg_1.ts", "/vod/t/other/seg_2.ts"]
        );
        assert_eq!(
            s.after("h", "/vod/t/other/seg_2.ts", 2),
            Vec::<String>::new()
        );
        assert_eq!(
            resolve("/a/b/p.m3u8", "/abs/x.ts").as_deref(),
            Some("/abs/x.ts")
        );
        assert_eq!(resolve("/a/b/p.m3u8", "http://cdn/x.ts"), None);
    }
}
