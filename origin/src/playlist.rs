//! HLS playlists and DASH manifests for the catalog.

use std::fmt::Write;

use crate::catalog::{LiveChannel, Rendition, VodTitle};
use crate::h264::CODECS;

fn secs(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

/// A master playlist listing every rendition.
pub fn hls_master(renditions: &[Rendition]) -> String {
    let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for r in renditions {
        let _ = writeln!(
            s,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},RESOLUTION={}x{},CODECS=\"{CODECS}\"\n{}/index.m3u8",
            r.bandwidth + r.bandwidth / 10,
            r.bandwidth,
            r.picture.width(),
            r.picture.height(),
            r.name
        );
    }
    s
}

/// A VOD media playlist: every segment, then `#EXT-X-ENDLIST`.
pub fn hls_vod_media(title: &VodTitle) -> String {
    let mut s = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n",
        secs(title.segment_duration).ceil() as u64
    );
    for i in 0..title.segment_count() {
        let _ = writeln!(
            s,
            "#EXTINF:{:.3},\nseg_{i}.ts",
            secs(title.segment_length(i))
        );
    }
    s.push_str("#EXT-X-ENDLIST\n");
    s
}

/// A live media playlist: the sliding window `first..=last`.
pub fn hls_live_media(channel: &LiveChannel, first: u64, last: u64) -> String {
    let mut s = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-INDEPENDENT-SEGMENTS\n",
        secs(channel.segment_duration).ceil() as u64
    );
    for i in first..=last {
        let _ = writeln!(
            s,
            "#EXTINF:{:.3},\nseg_{i}.ts",
            secs(channel.segment_duration)
        );
    }
    s
}

/// A static DASH manifest (MPEG-2 TS profile) over the same segments as HLS.
pub fn dash_mpd(title: &VodTitle) -> String {
    let total = secs(title.duration);
    let seg = secs(title.segment_duration);
    let mut s = format!(
        concat!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
            "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"urn:mpeg:dash:profile:mp2t-simple:2011\" ",
            "type=\"static\" mediaPresentationDuration=\"PT{:.3}S\" minBufferTime=\"PT{:.3}S\">\n",
            "  <Period id=\"0\" start=\"PT0S\">\n",
            "    <AdaptationSet mimeType=\"video/mp2t\" segmentAlignment=\"true\" bitstreamSwitching=\"true\" startWithSAP=\"1\">\n",
            "      <SegmentTemplate media=\"$RepresentationID$/seg_$Number$.ts\" startNumber=\"0\" timescale=\"1000\" duration=\"{}\"/>\n"
        ),
        total,
        seg,
        title.segment_duration.as_millis()
    );
    for r in &title.renditions {
        let _ = writeln!(
            s,
            "      <Representation id=\"{}\" bandwidth=\"{}\" width=\"{}\" height=\"{}\" codecs=\"{CODECS}\"/>",
            r.name,
            r.bandwidth,
            r.picture.width(),
            r.picture.height()
        );
    }
    s.push_str("    </AdaptationSet>\n  </Period>\n</MPD>\n");
    s
}
