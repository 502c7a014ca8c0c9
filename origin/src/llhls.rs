//! Low-Latency HLS (RFC 8216bis, Apple's delivery directives) for the live
//! channels, under `/ll/`: playlists with `EXT-X-PART`s and a preload hint,
//! blocking playlist reloads (`_HLS_msn`, `_HLS_part`), delta updates
//! (`_HLS_skip=YES`), and partial segments produced in real time.
//!
//! | path | what |
//! |---|---|
//! | `/ll/{channel}/master.m3u8` | master playlist |
//! | `/ll/{channel}/{rendition}/index.m3u8` | live media playlist with parts |
//! | `/ll/{channel}/{rendition}/seg_{n}.ts` | a whole segment |
//! | `/ll/{channel}/{rendition}/seg_{n}.{p}.ts` | part `p` of segment `n` |
//!
//! Time is the wall clock (parts are produced as it passes): segment `n`
//! covers `[n·S, (n+1)·S)` since the Unix epoch, part `p` of it
//! `[n·S + p·P, n·S + (p+1)·P)`. A part asked for while it is produced is
//! sent as its bytes appear (chunked); one asked for before it starts (the
//! preload hint) is held until it does, up to three part targets. A
//! blocking reload is held until the playlist holds the part asked for; one
//! more than two segments ahead is 400 (RFC 8216bis §6.2.5.2).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::stream;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;

use crate::catalog::{query_param, Class, LiveChannel, Rendition};
use crate::content::{fnv1a, Content};
use crate::http::{Body, State};
use crate::ts::{Segment, SegmentSpec};

/// Parts listed in full for this many segments before the live edge.
const PART_SEGMENTS: u64 = 2;
/// Interval between pieces of a part being produced.
const TICK: Duration = Duration::from_millis(20);

fn ms(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

fn now_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn at_ms(v: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(v)
}

fn text_response(
    status: StatusCode,
    body: String,
    cache_control: &str,
    ct: &str,
) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(ct) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(cache_control) {
        r.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    r
}

fn plain(status: StatusCode, body: &str) -> Response<Body> {
    text_response(
        status,
        body.to_string(),
        "max-age=1",
        "text/plain; charset=utf-8",
    )
}

/// The channel's timing: segment and part length (ms) and parts per segment.
struct Timing {
    seg: u64,
    part: u64,
    parts: u64,
}

impl Timing {
    fn of(c: &LiveChannel) -> Option<Timing> {
        let part = ms(c.part_duration?);
        let seg = ms(c.segment_duration);
        Some(Timing {
            seg,
            part,
            parts: (seg / part).max(1),
        })
    }

    /// Start of part `p` of segment `n`, ms since the epoch.
    fn part_start(&self, n: u64, p: u64) -> u64 {
        n * self.seg + p * self.part
    }

    fn part_end(&self, n: u64, p: u64) -> u64 {
        if p + 1 >= self.parts {
            (n + 1) * self.seg
        } else {
            self.part_start(n, p + 1)
        }
    }

    /// The segment being produced at `t` and how many of its parts are done.
    fn edge(&self, t: u64) -> (u64, u64) {
        let n = t / self.seg;
        (n, ((t - n * self.seg) / self.part).min(self.parts))
    }
}

/// The media playlist at time `t` (ms): complete segments of the window,
/// parts of the last few and of the segment in production, a preload hint.
fn playlist(c: &LiveChannel, tm: &Timing, t: u64, skip: bool) -> String {
    let (current, done) = tm.edge(t);
    let last = current.saturating_sub(1);
    let first = last.saturating_sub(u64::from(c.window).saturating_sub(1));
    let seg_s = tm.seg as f64 / 1000.0;
    let part_s = tm.part as f64 / 1000.0;
    let target = (tm.seg as f64 / 1000.0).ceil() as u64;
    // Delta updates may skip segments older than half the window.
    let skip_until = seg_s * f64::from(c.window) / 2.0;
    let mut s = format!(
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{target}\n\
         #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3},CAN-SKIP-UNTIL={skip_until:.3}\n\
         #EXT-X-PART-INF:PART-TARGET={part_s:.3}\n#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-INDEPENDENT-SEGMENTS\n",
        3.0 * part_s
    );
    let skipped = if skip {
        let keep = (f64::from(c.window) / 2.0).ceil() as u64;
        (last + 1 - first).saturating_sub(keep)
    } else {
        0
    };
    if skipped > 0 {
        s.push_str(&format!("#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}\n"));
    }
    let part_line = |s: &mut String, n: u64, p: u64| {
        let dur = (tm.part_end(n, p) - tm.part_start(n, p)) as f64 / 1000.0;
        let independent = if p == 0 { ",INDEPENDENT=YES" } else { "" };
        s.push_str(&format!(
            "#EXT-X-PART:DURATION={dur:.3},URI=\"seg_{n}.{p}.ts\"{independent}\n"
        ));
    };
    if current > 0 {
        for n in (first + skipped)..=last {
            if n + PART_SEGMENTS > last {
                for p in 0..tm.parts {
                    part_line(&mut s, n, p);
                }
            }
            s.push_str(&format!("#EXTINF:{seg_s:.3},\nseg_{n}.ts\n"));
        }
    }
    for p in 0..done {
        part_line(&mut s, current, p);
    }
    s.push_str(&format!(
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg_{current}.{done}.ts\"\n"
    ));
    s
}

fn segment(c: &LiveChannel, r: &Rendition, tm: &Timing, n: u64) -> Segment {
    Segment::build(&SegmentSpec {
        picture: r.picture,
        index: n,
        start_ticks: n * tm.seg * 90,
        duration_ticks: tm.seg * 90,
        target_bytes: r.bandwidth * tm.seg / 8000,
        seed: fnv1a(&format!("live/{}/{}", c.name, r.name)),
    })
}

/// Bytes `[a, b)` of segment `n` that part `p` is: whole 188-byte packets,
/// split evenly, the last part to the end.
fn part_range(len: u64, tm: &Timing, p: u64) -> (u64, u64) {
    let packets = len / 188;
    let a = packets * p / tm.parts * 188;
    let b = if p + 1 >= tm.parts {
        len
    } else {
        packets * (p + 1) / tm.parts * 188
    };
    (a, b)
}

/// Sends `bytes` as they are produced between `start` and `end` (ms since
/// the epoch): at each tick the share of the time gone by.
fn produced(state: &Arc<State>, bytes: Bytes, start: u64, end: u64, class: Class) -> Body {
    struct Producing {
        bytes: Bytes,
        sent: usize,
        start: u64,
        end: u64,
        state: Arc<State>,
        class: Class,
    }
    let p = Producing {
        bytes,
        sent: 0,
        start,
        end,
        state: state.clone(),
        class,
    };
    let s = stream::unfold(p, |mut p| async move {
        if p.sent >= p.bytes.len() {
            return None;
        }
        loop {
            let t = now_ms(SystemTime::now());
            let span = (p.end - p.start).max(1);
            let due = if t >= p.end {
                p.bytes.len()
            } else {
                (p.bytes.len() as u64 * t.saturating_sub(p.start) / span) as usize
            };
            if due > p.sent {
                let chunk = p.bytes.slice(p.sent..due);
                p.sent = due;
                p.state.stats.body_bytes(p.class, chunk.len() as u64);
                return Some((Ok::<_, std::io::Error>(Frame::data(chunk)), p));
            }
            tokio::time::sleep(TICK).await;
        }
    });
    StreamBody::new(s).boxed()
}

async fn sleep_until(t: u64) {
    let now = now_ms(SystemTime::now());
    if t > now {
        tokio::time::sleep(Duration::from_millis(t - now)).await;
    }
}

/// Serves a request under `/ll/`; `None` if the path is not one.
pub(crate) async fn serve(state: &Arc<State>, path: &str, query: &str) -> Option<Response<Body>> {
    let rest = path.strip_prefix("/ll/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    if let [channel, "master.m3u8"] = parts[..] {
        let c = state.catalog.live.iter().find(|c| c.name == channel)?;
        c.part_duration?;
        state.stats.request(Class::MasterPlaylist, path);
        state.stats.status(Class::MasterPlaylist, 200);
        return Some(text_response(
            StatusCode::OK,
            crate::playlist::hls_master(&c.renditions),
            "public, max-age=60",
            "application/vnd.apple.mpegurl",
        ));
    }
    let [channel, rendition, file] = parts[..] else {
        return None;
    };
    let c = state.catalog.live.iter().find(|c| c.name == channel)?;
    let r = c.renditions.iter().find(|r| r.name == rendition)?;
    let tm = Timing::of(c)?;
    let t = now_ms(state.clock.now());
    if file == "index.m3u8" {
        let class = Class::MediaPlaylist;
        // Counted with its directives: each blocking reload is its own.
        let target = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        state.stats.request(class, &target);
        let msn = query_param(query, "_HLS_msn");
        let part = query_param(query, "_HLS_part");
        let skip = query_param(query, "_HLS_skip").is_some_and(|v| v == "YES" || v == "v2");
        let mut at = t;
        let blocking = msn.is_some();
        if let Some(msn) = msn {
            let Ok(msn) = msn.parse::<u64>() else {
                state.stats.status(class, 400);
                return Some(plain(StatusCode::BAD_REQUEST, "bad _HLS_msn\n"));
            };
            let part = match part.map(|p| p.parse::<u64>()) {
                None => None,
                Some(Ok(p)) if p < tm.parts => Some(p),
                Some(_) => {
                    state.stats.status(class, 400);
                    return Some(plain(StatusCode::BAD_REQUEST, "bad _HLS_part\n"));
                }
            };
            let (current, _) = tm.edge(t);
            let last = current.saturating_sub(1);
            if msn > last + 2 {
                state.stats.status(class, 400);
                return Some(plain(
                    StatusCode::BAD_REQUEST,
                    "_HLS_msn is more than two segments ahead\n",
                ));
            }
            // Ready once the part (or the whole segment) is complete.
            let ready = match part {
                Some(p) => tm.part_end(msn, p),
                None => (msn + 1) * tm.seg,
            };
            sleep_until(ready).await;
            at = at.max(ready);
        } else if part.is_some() {
            state.stats.status(class, 400);
            return Some(plain(
                StatusCode::BAD_REQUEST,
                "_HLS_part without _HLS_msn\n",
            ));
        }
        let body = playlist(c, &tm, at, skip);
        // A blocking answer stays right for whoever asks the same; the
        // plain playlist changes every part.
        let cc = if blocking {
            format!("public, max-age={}", (3 * tm.seg / 1000).max(1))
        } else {
            "public, max-age=1".to_string()
        };
        state.stats.status(class, 200);
        let mut resp = text_response(StatusCode::OK, body, &cc, "application/vnd.apple.mpegurl");
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(at_ms(at))) {
            resp.headers_mut().insert(header::LAST_MODIFIED, v);
        }
        return Some(resp);
    }
    let name = file.strip_prefix("seg_")?.strip_suffix(".ts")?;
    let (n, p) = match name.split_once('.') {
        Some((n, p)) => (n.parse::<u64>().ok()?, Some(p.parse::<u64>().ok()?)),
        None => (name.parse::<u64>().ok()?, None),
    };
    let class = Class::Segment;
    state.stats.request(class, path);
    let (start, end) = match p {
        Some(p) if p < tm.parts => (tm.part_start(n, p), tm.part_end(n, p)),
        Some(_) => {
            state.stats.status(class, 404);
            return Some(plain(StatusCode::NOT_FOUND, "no such part\n"));
        }
        None => (n * tm.seg, (n + 1) * tm.seg),
    };
    // Not started yet: a preload hint is held until it starts, a request
    // further ahead is 404; too old for the window: 404.
    let oldest = tm.edge(t).0.saturating_sub(u64::from(c.window) * 10);
    if start > t + 3 * tm.part || n < oldest {
        state.stats.status(class, 404);
        return Some(plain(StatusCode::NOT_FOUND, "outside the live window\n"));
    }
    sleep_until(start).await;
    let seg = segment(c, r, &tm, n);
    let content = Content::Segment(Arc::new(seg));
    let (a, b) = match p {
        Some(p) => part_range(content.len(), &tm, p),
        None => (0, content.len()),
    };
    let bytes = content.slice(a, b);
    state.stats.status(class, 200);
    let complete = now_ms(SystemTime::now()) >= end;
    let mut resp = Response::new(if complete {
        state.stats.body_bytes(class, bytes.len() as u64);
        Full::new(bytes.clone()).map_err(|n| match n {}).boxed()
    } else {
        produced(state, bytes.clone(), start, end, class)
    });
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp2t"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    if complete {
        if let Ok(v) = HeaderValue::from_str(&bytes.len().to_string()) {
            h.insert(header::CONTENT_LENGTH, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"ll-{n}-{}\"", p.map_or(-1, |p| p as i64))) {
        h.insert(header::ETAG, v);
    }
    Some(resp)
}

/// The bytes of part `p` of segment `n` (or the whole segment), as the
/// origin sends them: for tests that compare what a cache served.
pub fn expected(c: &LiveChannel, r: &Rendition, n: u64, p: Option<u64>) -> Option<Bytes> {
    let tm = Timing::of(c)?;
    let content = Content::Segment(Arc::new(segment(c, r, &tm, n)));
    let (a, b) = match p {
        Some(p) => part_range(content.len(), &tm, p),
        None => (0, content.len()),
    };
    Some(content.slice(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn channel() -> LiveChannel {
        Catalog::default().live.remove(0)
    }

    #[test]
    fn the_playlist_lists_parts_near_the_edge_and_hints_the_next() {
        let c = channel();
        let tm = Timing::of(&c).unwrap();
        // 1.2 parts into segment 1000.
        let t = 1000 * tm.seg + tm.part + tm.part / 5;
        let pl = playlist(&c, &tm, t, false);
        assert!(pl.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES"));
        assert!(pl.contains("#EXT-X-PART-INF:PART-TARGET=0.500"));
        assert!(pl.contains("#EXT-X-MEDIA-SEQUENCE:994\n"));
        assert!(pl.contains("seg_999.ts\n"));
        assert!(!pl.contains("seg_1000.ts\n"));
        assert!(pl.contains("URI=\"seg_1000.0.ts\",INDEPENDENT=YES"));
        assert!(!pl.contains("#EXT-X-PART:DURATION=0.500,URI=\"seg_1000.1.ts\""));
        assert!(pl.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg_1000.1.ts\"\n"));
        assert!(pl.contains("URI=\"seg_998.3.ts\""));
        assert!(!pl.contains("URI=\"seg_997.0.ts\""));
        let delta = playlist(&c, &tm, t, true);
        assert!(delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=3\n"));
        assert!(!delta.contains("seg_994.ts"));
    }

    #[test]
    fn parts_split_a_segment_at_packet_boundaries() {
        let c = channel();
        let tm = Timing::of(&c).unwrap();
        let whole = expected(&c, &c.renditions[0], 7, None).unwrap();
        let mut joined = Vec::new();
        for p in 0..tm.parts {
            let part = expected(&c, &c.renditions[0], 7, Some(p)).unwrap();
            assert_eq!(
                part.len() % 188,
                if p + 1 == tm.parts {
                    whole.len() % 188
                } else {
                    0
                }
            );
            joined.extend_from_slice(&part);
        }
        assert_eq!(joined, whole.to_vec());
    }
}
