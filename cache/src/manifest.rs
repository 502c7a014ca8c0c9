//! What a VOD manifest lists: the renditions of an HLS master playlist,
//! the segments (and initialization sections) of an HLS media playlist
//! (RFC 8216 §4.3), every segment of each Representation of a static DASH
//! MPD (ISO/IEC 23009-1 §5.3.9: SegmentTemplate with a duration or a
//! SegmentTimeline, SegmentList, SegmentBase). Used by prefill to expand a
//! manifest URL into the objects to fetch. URIs come back as written
//! (relative ones are resolved by the caller against the manifest URL,
//! DASH ones already joined with their `BaseURL`s).

/// The most objects one manifest may expand to: a hostile or broken
/// manifest (a 1 ms segment duration over a day) is refused, not expanded.
pub const MAX_OBJECTS: usize = 200_000;

/// An HLS master playlist's renditions: variant streams, and alternative
/// renditions with a URI (`EXT-X-MEDIA`), in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub uri: String,
    /// `NAME` (EXT-X-MEDIA) and `RESOLUTION` (EXT-X-STREAM-INF), when given.
    pub name: Option<String>,
    pub resolution: Option<String>,
}

impl Variant {
    /// Whether `wanted` names this rendition: a segment of its URI's path
    /// (`high` in `high/index.m3u8`), the URI's file name without its
    /// extension, its `NAME`, or its `RESOLUTION` (`1280x720`).
    pub fn is(&self, wanted: &str) -> bool {
        let path = self.uri.split(['?', '#']).next().unwrap_or_default();
        let stem = |s: &str| s.rsplit_once('.').map_or(s, |(a, _)| a).to_string();
        path.split('/')
            .any(|seg| seg == wanted || stem(seg) == wanted)
            || self.name.as_deref() == Some(wanted)
            || self.resolution.as_deref() == Some(wanted)
    }
}

/// An attribute of an HLS tag line (`URI="a.m3u8"`, `RESOLUTION=1280x720`).
fn attribute(line: &str, name: &str) -> Option<String> {
    let (_, attrs) = line.split_once(':')?;
    let mut rest = attrs;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let (v, n) = quoted.split_once('"')?;
            (v, n.strip_prefix(',').unwrap_or(n))
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        if key.trim() == name {
            return Some(value.to_string());
        }
        rest = next;
    }
    None
}

/// Whether an HLS playlist is a master playlist (it lists renditions).
pub fn is_hls_master(body: &str) -> bool {
    body.lines()
        .any(|l| l.trim_start().starts_with("#EXT-X-STREAM-INF"))
}

/// The renditions of an HLS master playlist.
pub fn hls_variants(body: &str) -> Vec<Variant> {
    let mut out: Vec<Variant> = Vec::new();
    let mut pending: Option<Option<String>> = None;
    for line in body.lines().map(str::trim) {
        if line.starts_with("#EXT-X-STREAM-INF") {
            pending = Some(attribute(line, "RESOLUTION"));
        } else if line.starts_with("#EXT-X-MEDIA:") || line.starts_with("#EXT-X-I-FRAME-STREAM-INF")
        {
            if let Some(uri) = attribute(line, "URI") {
                out.push(Variant {
                    uri,
                    name: attribute(line, "NAME"),
                    resolution: attribute(line, "RESOLUTION"),
                });
            }
        } else if !line.is_empty() && !line.starts_with('#') {
            if let Some(resolution) = pending.take() {
                out.push(Variant {
                    uri: line.to_string(),
                    name: None,
                    resolution,
                });
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|v| seen.insert(v.uri.clone()));
    out
}

/// The objects of an HLS media playlist: each `EXT-X-MAP` initialization
/// section and each segment, in order, each once (byte ranges of one file
/// are one object).
pub fn hls_segments(body: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut next_is_segment = false;
    for line in body.lines().map(str::trim) {
        if line.starts_with("#EXT-X-MAP:") {
            if let Some(uri) = attribute(line, "URI") {
                if seen.insert(uri.clone()) {
                    out.push(uri);
                }
            }
        } else if line.starts_with("#EXTINF") {
            next_is_segment = true;
        } else if !line.is_empty() && !line.starts_with('#') && next_is_segment {
            next_is_segment = false;
            if seen.insert(line.to_string()) {
                out.push(line.to_string());
            }
        }
        if out.len() > MAX_OBJECTS {
            return Err(format!("more than {MAX_OBJECTS} segments"));
        }
    }
    Ok(out)
}

/// The most bytes of URIs one MPD may expand to (a long `id` or
/// `bandwidth` repeated in every segment's name).
const MAX_URI_BYTES: usize = 64 << 20;

/// The widest `%0Nd` a template may ask for.
const MAX_WIDTH: usize = 32;

/// `$Identifier$` substitution of a SegmentTemplate (§5.3.9.4.4), with
/// `%0Nd` widths.
fn fill_template(template: &str, id: &str, bandwidth: &str, number: u64, time: u64) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('$') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let ident = &after[..end];
        let (name, width) = match ident.split_once('%') {
            Some((n, f)) => (
                n,
                f.strip_prefix('0')
                    .and_then(|w| w.strip_suffix('d'))
                    .and_then(|w| w.parse::<usize>().ok())
                    // A u64 has 20 digits: a wider field is padding a
                    // hostile MPD asks for (`%0999999999d`), not a name.
                    .unwrap_or(0)
                    .min(MAX_WIDTH),
            ),
            None => (ident, 0),
        };
        match name {
            "" => out.push('$'),
            "RepresentationID" => out.push_str(id),
            "Bandwidth" => out.push_str(&format!("{bandwidth:0>width$}")),
            "Number" => out.push_str(&format!("{number:0width$}")),
            "Time" => out.push_str(&format!("{time:0width$}")),
            _ => {
                out.push('$');
                out.push_str(ident);
                out.push('$');
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Joins DASH `BaseURL`s: an absolute one replaces what came before, a
/// relative one is appended to its parent's directory.
fn join_base(parent: &str, base: Option<&str>) -> String {
    match base.map(str::trim) {
        None | Some("") => parent.to_string(),
        Some(b) if b.contains("://") || b.starts_with('/') => b.to_string(),
        Some(b) => {
            let dir = parent.rsplit_once('/').map_or("", |(d, _)| d);
            if dir.is_empty() {
                b.to_string()
            } else {
                format!("{dir}/{b}")
            }
        }
    }
}

fn base_of<'a>(node: roxmltree::Node<'a, 'a>) -> Option<&'a str> {
    node.children()
        .find(|c| c.has_tag_name("BaseURL"))
        .and_then(|c| c.text())
}

/// A SegmentTemplate's attributes, the Representation's over the
/// AdaptationSet's over the Period's.
#[derive(Default, Clone)]
struct Template<'a> {
    media: Option<&'a str>,
    initialization: Option<&'a str>,
    start_number: Option<u64>,
    timescale: Option<u64>,
    duration: Option<u64>,
    timeline: Option<roxmltree::Node<'a, 'a>>,
}

impl<'a> Template<'a> {
    fn over(mut self, node: roxmltree::Node<'a, 'a>) -> Self {
        if let Some(t) = node.children().find(|c| c.has_tag_name("SegmentTemplate")) {
            let num = |n: &str| t.attribute(n).and_then(|v| v.trim().parse::<u64>().ok());
            self.media = t.attribute("media").or(self.media);
            self.initialization = t.attribute("initialization").or(self.initialization);
            self.start_number = num("startNumber").or(self.start_number);
            self.timescale = num("timescale").or(self.timescale);
            self.duration = num("duration").or(self.duration);
            if let Some(tl) = t.children().find(|c| c.has_tag_name("SegmentTimeline")) {
                self.timeline = Some(tl);
            }
        }
        self
    }
}

/// The objects of a static DASH MPD, for the Representations `keep`
/// accepts (by `id`). A dynamic (live) MPD is refused: prefill is for VOD.
pub fn dash_segments(body: &str, keep: impl Fn(&str) -> bool) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    walk(body, &keep, false, &mut |rep| {
        for uri in rep.segments {
            if seen.insert(uri.clone()) {
                out.push(uri);
            }
        }
        if out.len() > MAX_OBJECTS {
            return Err(format!("more than {MAX_OBJECTS} segments"));
        }
        Ok(())
    })?;
    Ok(out)
}

/// One Representation's objects in order (initialization first), for
/// segment prefetch.
#[derive(Debug, Clone, PartialEq)]
pub struct Representation {
    pub id: String,
    pub segments: Vec<String>,
    /// The media template with `$RepresentationID$` and `$Bandwidth$`
    /// filled in and `$Number$` left (resolved against the BaseURLs), when
    /// segments are numbered without a timeline: a live MPD's list has no
    /// end, so the next numbers are predicted from it.
    pub number_template: Option<String>,
}

/// Every Representation of an MPD, static or dynamic, as far as it can be
/// listed: a dynamic MPD's numbered template without a known length gives
/// its template and no list. `Err` only when the MPD is not one.
pub fn dash_representations(body: &str) -> Result<Vec<Representation>, String> {
    let mut out = Vec::new();
    walk(body, &|_: &str| true, true, &mut |rep| {
        out.push(rep);
        Ok(())
    })?;
    Ok(out)
}

fn walk(
    body: &str,
    keep: &dyn Fn(&str) -> bool,
    dynamic: bool,
    sink: &mut dyn FnMut(Representation) -> Result<(), String>,
) -> Result<(), String> {
    let doc = roxmltree::Document::parse(body).map_err(|e| format!("not an MPD: {e}"))?;
    let mpd = doc.root_element();
    if !mpd.has_tag_name("MPD") {
        return Err("not an MPD: the root element is not <MPD>".to_string());
    }
    let live = mpd.attribute("type") == Some("dynamic");
    if live && !dynamic {
        return Err("a live (dynamic) MPD: prefill takes VOD manifests".to_string());
    }
    let total = mpd
        .attribute("mediaPresentationDuration")
        .and_then(crate::video::iso8601_duration);
    // Every URI made counts, repeated ones too: a template without
    // `$Number$` or `$Time$` repeated over many timelines makes one URI a
    // great many times.
    let mut made = 0usize;
    let mut bytes = 0usize;
    let mut push = |uri: String, out: &mut Vec<String>| -> Result<(), String> {
        made += 1;
        bytes += uri.len();
        out.push(uri);
        if made > 2 * MAX_OBJECTS {
            return Err(format!("more than {MAX_OBJECTS} segments"));
        }
        if bytes > MAX_URI_BYTES {
            return Err(format!(
                "segment URIs of more than {} MiB in all",
                MAX_URI_BYTES >> 20
            ));
        }
        Ok(())
    };
    let mpd_base = join_base("", base_of(mpd));
    for period in mpd.children().filter(|c| c.has_tag_name("Period")) {
        let period_base = join_base(&mpd_base, base_of(period));
        let length = period
            .attribute("duration")
            .and_then(crate::video::iso8601_duration)
            .or(total);
        let period_t = Template::default().over(period);
        for set in period
            .children()
            .filter(|c| c.has_tag_name("AdaptationSet"))
        {
            let set_base = join_base(&period_base, base_of(set));
            let set_t = period_t.clone().over(set);
            for rep in set.children().filter(|c| c.has_tag_name("Representation")) {
                let id = rep.attribute("id").unwrap_or_default();
                if !keep(id) {
                    continue;
                }
                let bandwidth = rep.attribute("bandwidth").unwrap_or_default();
                let mut out = Vec::new();
                let mut number_template = None;
                let base = join_base(&set_base, base_of(rep));
                let t = set_t.clone().over(rep);
                let at = |uri: &str| join_base(&base, Some(uri));
                if let Some(list) = rep
                    .children()
                    .chain(set.children())
                    .find(|c| c.has_tag_name("SegmentList"))
                {
                    for c in list.children() {
                        if c.has_tag_name("Initialization") {
                            if let Some(u) = c.attribute("sourceURL") {
                                push(at(u), &mut out)?;
                            }
                        } else if c.has_tag_name("SegmentURL") {
                            if let Some(u) = c.attribute("media") {
                                push(at(u), &mut out)?;
                            }
                        }
                    }
                    sink(Representation {
                        id: id.to_string(),
                        segments: out,
                        number_template,
                    })?;
                    continue;
                }
                let Some(media) = t.media else {
                    // SegmentBase or nothing: the Representation is one file.
                    if !base.is_empty() {
                        push(base.clone(), &mut out)?;
                    }
                    sink(Representation {
                        id: id.to_string(),
                        segments: out,
                        number_template,
                    })?;
                    continue;
                };
                if let Some(init) = t.initialization {
                    push(at(&fill_template(init, id, bandwidth, 0, 0)), &mut out)?;
                }
                let start = t.start_number.unwrap_or(1);
                if let Some(timeline) = t.timeline {
                    let mut time = 0u64;
                    let mut number = start;
                    for s in timeline.children().filter(|c| c.has_tag_name("S")) {
                        let num =
                            |n: &str| s.attribute(n).and_then(|v| v.trim().parse::<i64>().ok());
                        if let Some(t0) = num("t").filter(|t| *t >= 0) {
                            time = t0 as u64;
                        }
                        let d = num("d")
                            .filter(|d| *d > 0)
                            .ok_or("an S element without a positive d")?
                            as u64;
                        let repeat = num("r").unwrap_or(0);
                        let count = if repeat < 0 {
                            // Until the end of the period.
                            let scale = t.timescale.unwrap_or(1).max(1);
                            let end = length
                                .map(|l| (l.as_secs_f64() * scale as f64) as u64)
                                .ok_or("r=-1 in a period of no known length")?;
                            end.saturating_sub(time).div_ceil(d)
                        } else {
                            repeat as u64 + 1
                        };
                        if count > MAX_OBJECTS as u64 {
                            return Err(format!("more than {MAX_OBJECTS} segments"));
                        }
                        for _ in 0..count {
                            push(
                                at(&fill_template(media, id, bandwidth, number, time)),
                                &mut out,
                            )?;
                            time = time.saturating_add(d);
                            number = number.saturating_add(1);
                        }
                    }
                    sink(Representation {
                        id: id.to_string(),
                        segments: out,
                        number_template,
                    })?;
                    continue;
                }
                if media.contains("$Number") {
                    number_template = Some(at(&fill_template_keeping_number(media, id, bandwidth)));
                }
                let (Some(duration), Some(length)) = (t.duration.filter(|d| *d > 0), length) else {
                    if live {
                        // Open-ended: the template predicts what comes next.
                        sink(Representation {
                            id: id.to_string(),
                            segments: out,
                            number_template,
                        })?;
                        continue;
                    }
                    return Err(format!(
                        "Representation {id:?}: a SegmentTemplate needs a duration and a period length, or a SegmentTimeline"
                    ));
                };
                let scale = t.timescale.unwrap_or(1).max(1) as f64;
                let count = (length.as_secs_f64() * scale / duration as f64).ceil();
                if !(0.0..=MAX_OBJECTS as f64).contains(&count) {
                    return Err(format!("more than {MAX_OBJECTS} segments"));
                }
                for i in 0..count as u64 {
                    let number = start.saturating_add(i);
                    push(
                        at(&fill_template(
                            media,
                            id,
                            bandwidth,
                            number,
                            i.saturating_mul(duration),
                        )),
                        &mut out,
                    )?;
                }
                sink(Representation {
                    id: id.to_string(),
                    segments: out,
                    number_template,
                })?;
            }
        }
    }
    Ok(())
}

/// `$RepresentationID$` and `$Bandwidth$` filled in, `$Number…$` kept.
fn fill_template_keeping_number(template: &str, id: &str, bandwidth: &str) -> String {
    // `$Number$` may carry a width: each piece between `$Number…$` fields
    // is filled on its own.
    let mut out = String::new();
    let mut rest = template;
    while let Some(at) = rest.find("$Number") {
        out.push_str(&fill_template(&rest[..at], id, bandwidth, 0, 0));
        let after = &rest[at + 1..];
        let Some(end) = after.find('$') else {
            out.push_str(&rest[at..]);
            return out;
        };
        out.push_str(&rest[at..at + end + 2]);
        rest = &after[end + 1..];
    }
    out.push_str(&fill_template(rest, id, bandwidth, 0, 0));
    out
}

/// The number in `path` where `template` (from [`Representation`]) has
/// `$Number$` or `$Number%0Nd$`, and the path of number `n` by it.
pub fn number_in(template: &str, path: &str) -> Option<(u64, usize)> {
    let at = template.find("$Number")?;
    let after = &template[at + 1..];
    let end = after.find('$')?;
    let (prefix, suffix) = (&template[..at], &after[end + 1..]);
    let digits = path.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let width = after[..end]
        .strip_prefix("Number%0")
        .and_then(|w| w.strip_suffix('d'))
        .and_then(|w| w.parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_WIDTH);
    Some((digits.parse().ok()?, width))
}

/// The path of segment `n` by a number template.
pub fn numbered(template: &str, n: u64, width: usize) -> Option<String> {
    let at = template.find("$Number")?;
    let after = &template[at + 1..];
    let end = after.find('$')?;
    Some(format!(
        "{}{n:0width$}{}",
        &template[..at],
        &after[end + 1..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "#EXTM3U\n\
        #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"English\",URI=\"audio/en.m3u8\"\n\
        #EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,CODECS=\"avc1.4d401e,mp4a.40.2\"\n\
        low/index.m3u8\n\
        #EXT-X-STREAM-INF:BANDWIDTH=3000000,RESOLUTION=1280x720\n\
        \n\
        high/index.m3u8?token=1\n\
        #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,URI=\"low/iframes.m3u8\"\n";

    #[test]
    fn a_master_playlist_lists_every_rendition_with_its_names() {
        assert!(is_hls_master(MASTER));
        let v = hls_variants(MASTER);
        let uris: Vec<&str> = v.iter().map(|v| v.uri.as_str()).collect();
        assert_eq!(
            uris,
            [
                "audio/en.m3u8",
                "low/index.m3u8",
                "high/index.m3u8?token=1",
                "low/iframes.m3u8"
            ]
        );
        assert!(v[0].is("English") && v[0].is("audio") && v[0].is("en"));
        assert!(v[1].is("low") && v[1].is("640x360") && !v[1].is("high"));
        assert!(v[2].is("high") && v[2].is("1280x720") && !v[2].is("token=1"));
        assert_eq!(
            attribute("#EXT-X-MAP:URI=\"a,b.mp4\",BYTERANGE=\"1@0\"", "URI").as_deref(),
            Some("a,b.mp4")
        );
        assert_eq!(attribute("#X:A=1,B=2", "B").as_deref(), Some("2"));
        assert_eq!(attribute("#X:A=\"unterminated", "A"), None);
    }

    #[test]
    fn a_media_playlist_lists_its_maps_and_segments_once() {
        let body = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI=\"init.mp4\"\n\
            #EXTINF:4,\nseg_0.m4s\n#EXT-X-BYTERANGE:100@0\n#EXTINF:4,\nall.ts\n\
            #EXT-X-BYTERANGE:100@100\n#EXTINF:4,\nall.ts\n#EXT-X-MAP:URI=\"init2.mp4\"\n\
            #EXT-X-DISCONTINUITY\n#EXTINF:4.0,title\n/abs/seg_9.m4s\n# a comment\nstray\n#EXT-X-ENDLIST\n";
        assert_eq!(
            hls_segments(body).unwrap(),
            [
                "init.mp4",
                "seg_0.m4s",
                "all.ts",
                "init2.mp4",
                "/abs/seg_9.m4s"
            ]
        );
        assert!(!is_hls_master(body));
        assert_eq!(hls_segments("").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn templates_fill_every_identifier() {
        assert_eq!(
            fill_template("$RepresentationID$/seg_$Number$.ts", "hi", "9", 7, 0),
            "hi/seg_7.ts"
        );
        assert_eq!(
            fill_template("s_$Number%05d$_$Time$.m4s", "x", "9", 42, 9000),
            "s_00042_9000.m4s"
        );
        assert_eq!(
            fill_template("$Bandwidth$-$$-$Odd$-$open", "x", "128000", 1, 0),
            "128000-$-$Odd$-$open"
        );
    }

    #[test]
    fn a_static_mpd_expands_templates_timelines_and_lists() {
        // The synthetic origin's shape: 10 s of 4 s segments, two Representations.
        let mpd = r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT10.000S">
  <Period id="0"><AdaptationSet>
    <SegmentTemplate media="$RepresentationID$/seg_$Number$.ts" startNumber="0" timescale="1000" duration="4000"/>
    <Representation id="low" bandwidth="1"/><Representation id="high" bandwidth="2"/>
  </AdaptationSet></Period></MPD>"#;
        assert_eq!(
            dash_segments(mpd, |_| true).unwrap(),
            [
                "low/seg_0.ts",
                "low/seg_1.ts",
                "low/seg_2.ts",
                "high/seg_0.ts",
                "high/seg_1.ts",
                "high/seg_2.ts"
            ]
        );
        assert_eq!(dash_segments(mpd, |id| id == "high").unwrap().len(), 3);
        let timeline = r#"<MPD type="static" mediaPresentationDuration="PT20S"><BaseURL>media/</BaseURL>
  <Period><AdaptationSet><BaseURL>v/</BaseURL>
    <SegmentTemplate timescale="10" initialization="$RepresentationID$/init.mp4" media="$RepresentationID$/$Time$.m4s">
      <SegmentTimeline><S t="0" d="40" r="1"/><S d="20"/><S d="50" r="-1"/></SegmentTimeline>
    </SegmentTemplate>
    <Representation id="a"/>
  </AdaptationSet>
  <AdaptationSet><Representation id="b"><BaseURL>http://cdn.example/b.mp4</BaseURL><SegmentBase/></Representation>
    <Representation id="c"><SegmentList><Initialization sourceURL="c/i.mp4"/><SegmentURL media="c/1.m4s"/><SegmentURL media="c/2.m4s"/></SegmentList></Representation>
  </AdaptationSet></Period></MPD>"#;
        assert_eq!(
            dash_segments(timeline, |_| true).unwrap(),
            [
                "media/v/a/init.mp4",
                "media/v/a/0.m4s",
                "media/v/a/40.m4s",
                "media/v/a/80.m4s",
                "media/v/a/100.m4s",
                "media/v/a/150.m4s",
                "http://cdn.example/b.mp4",
                "media/c/i.mp4",
                "media/c/1.m4s",
                "media/c/2.m4s",
            ]
        );
    }

    #[test]
    fn hostile_or_unusable_mpds_are_refused_with_a_reason() {
        let cases = [
            ("", "not an MPD"),
            ("<html/>", "root element"),
            ("<MPD type=\"dynamic\"/>", "live"),
            (
                "<MPD type=\"static\" mediaPresentationDuration=\"PT24H\"><Period><AdaptationSet><SegmentTemplate media=\"$Number$\" timescale=\"1000\" duration=\"1\"/><Representation id=\"a\"/></AdaptationSet></Period></MPD>",
                "more than",
            ),
            (
                "<MPD type=\"static\"><Period><AdaptationSet><SegmentTemplate media=\"$Number$\" duration=\"4\"/><Representation id=\"a\"/></AdaptationSet></Period></MPD>",
                "period length",
            ),
            (
                "<MPD><Period><AdaptationSet><SegmentTemplate media=\"$Time$\"><SegmentTimeline><S d=\"1\" r=\"99999999999\"/></SegmentTimeline></SegmentTemplate><Representation id=\"a\"/></AdaptationSet></Period></MPD>",
                "more than",
            ),
            (
                "<MPD><Period><AdaptationSet><SegmentTemplate media=\"$Time$\"><SegmentTimeline><S d=\"0\"/></SegmentTimeline></SegmentTemplate><Representation id=\"a\"/></AdaptationSet></Period></MPD>",
                "positive d",
            ),
            (
                "<MPD><Period><AdaptationSet><SegmentTemplate media=\"$Time$\"><SegmentTimeline><S d=\"5\" r=\"-1\"/></SegmentTimeline></SegmentTemplate><Representation id=\"a\"/></AdaptationSet></Period></MPD>",
                "no known length",
            ),
        ];
        for (mpd, why) in cases {
            let e = dash_segments(mpd, |_| true).unwrap_err();
            assert!(e.contains(why), "{mpd}: {e}");
        }
    }

    /// Numbers and sizes a hostile MPD chooses: no arithmetic wraps or
    /// panics, no padding or repetition makes gigabytes of names, and no
    /// repeated URI makes unbounded work.
    #[test]
    fn absurd_numbers_in_an_mpd_neither_panic_nor_blow_up() {
        let template = |attrs: &str, timeline: &str| {
            format!(
                "<MPD type=\"static\" mediaPresentationDuration=\"PT10S\"><Period><AdaptationSet>\
                 <SegmentTemplate {attrs}>{timeline}</SegmentTemplate>\
                 <Representation id=\"a\" bandwidth=\"1\"/></AdaptationSet></Period></MPD>"
            )
        };
        // startNumber at the top of u64, and a number that would wrap.
        let top = dash_segments(
            &template(
                "media=\"$Number$\" startNumber=\"18446744073709551615\" timescale=\"1\" duration=\"2\"",
                "",
            ),
            |_| true,
        )
        .unwrap();
        assert_eq!(
            top.first().map(String::as_str),
            Some("18446744073709551615")
        );
        let top = dash_segments(
            &template(
                "media=\"$Number$-$Time$\" startNumber=\"18446744073709551615\"",
                "<SegmentTimeline><S t=\"9223372036854775807\" d=\"9223372036854775807\" r=\"3\"/></SegmentTimeline>",
            ),
            |_| true,
        )
        .unwrap();
        // Saturated at u64::MAX, the last two are one name.
        assert_eq!(top.len(), 3, "{top:?}");
        // $Time$ = i × duration past u64: a huge timescale and duration.
        let wide = dash_segments(
            &template(
                "media=\"$Time$\" timescale=\"18446744073709551615\" duration=\"10000000000000000000\"",
                "",
            ),
            |_| true,
        )
        .unwrap();
        assert!(wide.len() > 2, "{wide:?}");
        // A width of a billion digits is not a billion bytes per name.
        let padded = dash_segments(
            &template(
                "media=\"$Number%0999999999d$\" timescale=\"1\" duration=\"5\"",
                "",
            ),
            |_| true,
        )
        .unwrap();
        assert!(padded.iter().all(|u| u.len() <= MAX_WIDTH), "{padded:?}");
        // One URI made over and over (no $Number$/$Time$): refused, not
        // ground through.
        let s = "<S d=\"1\" r=\"199999\"/>".repeat(20);
        let e = dash_segments(
            &template(
                "media=\"same.m4s\"",
                &format!("<SegmentTimeline>{s}</SegmentTimeline>"),
            ),
            |_| true,
        )
        .unwrap_err();
        assert!(e.contains("more than"), "{e}");
        // A long id in each of many names.
        let id = "i".repeat(1 << 12);
        let mpd = format!(
            "<MPD type=\"static\" mediaPresentationDuration=\"PT100000S\"><Period><AdaptationSet>\
             <SegmentTemplate media=\"$RepresentationID$/$Number$\" duration=\"1\"/>\
             <Representation id=\"{id}\"/></AdaptationSet></Period></MPD>"
        );
        let e = dash_segments(&mpd, |_| true).unwrap_err();
        assert!(e.contains("MiB"), "{e}");
        // Deeply nested XML is read without a stack overflow (and lists nothing).
        let deep = format!(
            "<MPD>{}{}</MPD>",
            "<a>".repeat(100_000),
            "</a>".repeat(100_000)
        );
        assert_eq!(dash_segments(&deep, |_| true), Ok(Vec::new()));
    }
}
