//! What a prefill job is asked to do, as `POST /cache/prefill` and
//! `edge prefill` send it, checked before anything runs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A prefill job's request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Object URLs, or HLS (`.m3u8`) and DASH (`.mpd`) manifest URLs that
    /// expand to every segment of the chosen renditions.
    pub urls: Vec<String>,
    /// Renditions of manifests to fill (empty: all). HLS: a segment of the
    /// rendition playlist's path, its file name without extension, its
    /// `NAME` or `RESOLUTION`; DASH: the Representation `id`.
    #[serde(default)]
    pub renditions: Vec<String>,
    /// Local time window to fill in, `"HH:MM-HH:MM"` (may span midnight);
    /// outside it the job waits.
    #[serde(default)]
    pub window: Option<String>,
    /// Bandwidth cap in bits per second: a number, or `"50 Mbit/s"`,
    /// `"50Mbps"`, `"800 kbit/s"`, `"1Gbps"`.
    #[serde(default)]
    pub rate: Option<Rate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Rate {
    Bits(u64),
    Text(String),
}

/// A checked spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub urls: Vec<url::Url>,
    pub renditions: Vec<String>,
    pub window: Option<Window>,
    /// Bytes per second.
    pub bytes_per_second: Option<u64>,
}

/// Minutes after local midnight: `[start, end)`, wrapping past midnight
/// when `end <= start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u32,
    pub end: u32,
}

impl Window {
    pub fn parse(text: &str) -> Result<Self, String> {
        let minute = |s: &str| -> Option<u32> {
            let (h, m) = s.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60 && s.trim().len() == 5).then_some(h * 60 + m)
        };
        let (a, b) = text
            .split_once('-')
            .ok_or_else(|| format!("window {text:?}: expected \"HH:MM-HH:MM\""))?;
        let (Some(start), Some(end)) = (minute(a), minute(b)) else {
            return Err(format!(
                "window {text:?}: expected \"HH:MM-HH:MM\" (00:00 to 23:59)"
            ));
        };
        if start == end {
            return Err(format!("window {text:?} is empty"));
        }
        Ok(Self { start, end })
    }

    pub fn contains(&self, minute: u32) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }

    /// How long from `minute` (and `second` in it) until the window opens.
    pub fn wait(&self, minute: u32, second: u32) -> Duration {
        if self.contains(minute) {
            return Duration::ZERO;
        }
        let minutes = (self.start + 24 * 60 - minute) % (24 * 60);
        Duration::from_secs(u64::from(minutes) * 60)
            .saturating_sub(Duration::from_secs(u64::from(second)))
    }
}

/// `"50 Mbit/s"` → 50 000 000 bits/s (`edge_config::units::parse_bit_rate`).
pub fn parse_rate(text: &str) -> Result<u64, String> {
    edge_config::units::parse_bit_rate(text)
}

impl Spec {
    /// Checks every field; the first fault, said precisely.
    pub fn check(&self) -> Result<Checked, String> {
        if self.urls.is_empty() {
            return Err("\"urls\" is empty: name objects or manifests to fill".to_string());
        }
        if self.urls.len() > edge_cache::manifest::MAX_OBJECTS {
            return Err(format!(
                "{} URLs: at most {} per job",
                self.urls.len(),
                edge_cache::manifest::MAX_OBJECTS
            ));
        }
        let mut urls = Vec::with_capacity(self.urls.len());
        for (i, u) in self.urls.iter().enumerate() {
            let parsed = url::Url::parse(u.trim())
                .map_err(|e| format!("urls[{i}] {u:?}: not a URL ({e})"))?;
            if parsed.scheme() != "http" || parsed.host_str().is_none() {
                return Err(format!(
                    "urls[{i}] {u:?}: an http:// URL with a host (the host name the clients use)"
                ));
            }
            urls.push(parsed);
        }
        let bits = match &self.rate {
            None => None,
            Some(Rate::Bits(b)) => Some(parse_rate(&b.to_string())?),
            Some(Rate::Text(t)) => Some(parse_rate(t)?),
        };
        Ok(Checked {
            urls,
            renditions: self
                .renditions
                .iter()
                .map(|r| r.trim().to_string())
                .collect(),
            window: self.window.as_deref().map(Window::parse).transpose()?,
            bytes_per_second: bits.map(|b| (b / 8).max(1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_wrap_and_say_how_long_to_wait() {
        let w = Window::parse("02:00-14:00").unwrap();
        assert!(w.contains(120) && w.contains(839) && !w.contains(840) && !w.contains(119));
        assert_eq!(w.wait(60, 30), Duration::from_secs(60 * 60 - 30));
        assert_eq!(
            w.wait(900, 0),
            Duration::from_secs((24 * 60 - 900 + 120) * 60)
        );
        let night = Window::parse("22:30-06:00").unwrap();
        assert!(
            night.contains(23 * 60)
                && night.contains(0)
                && night.contains(359)
                && !night.contains(360)
        );
        assert_eq!(night.wait(22 * 60 + 29, 0), Duration::from_secs(60));
        for bad in [
            "",
            "2-14",
            "02:00",
            "24:00-01:00",
            "01:60-02:00",
            "02:00-02:00",
            "2:00-14:00",
            "aa:bb-cc:dd",
            "02:00-14:00-15:00",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_read_in_bits_per_second() {
        assert_eq!(parse_rate("50 Mbit/s"), Ok(50_000_000));
        assert_eq!(parse_rate("50Mbps"), Ok(50_000_000));
        assert_eq!(parse_rate("1.5 Gbit/s"), Ok(1_500_000_000));
        assert_eq!(parse_rate("800 kbit/s"), Ok(800_000));
        assert_eq!(parse_rate("640000"), Ok(640_000));
        for bad in [
            "",
            "fast",
            "50 MB/s",
            "-1 Mbps",
            "0",
            "1 bps",
            "64 kbit/s",
            "NaN Mbps",
            "1e30",
            "9999 Gbps",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn specs_are_checked_field_by_field() {
        let ok = |j: &str| serde_json::from_str::<Spec>(j).unwrap().check();
        let c = ok(r#"{"urls": ["http://video.test/vod/a/master.m3u8"], "rate": "50 Mbit/s", "window": "02:00-14:00", "renditions": ["high"]}"#).unwrap();
        assert_eq!(c.bytes_per_second, Some(6_250_000));
        assert_eq!(
            ok(r#"{"urls": ["http://h/x"], "rate": 8000000}"#)
                .unwrap()
                .bytes_per_second,
            Some(1_000_000)
        );
        for (bad, why) in [
            (r#"{"urls": []}"#, "empty"),
            (r#"{"urls": ["video.test/a"]}"#, "not a URL"),
            (r#"{"urls": ["ftp://h/a"]}"#, "http://"),
            (r#"{"urls": ["http://h/a"], "rate": "fast"}"#, "rate"),
            (r#"{"urls": ["http://h/a"], "window": "later"}"#, "window"),
        ] {
            let e = ok(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(serde_json::from_str::<Spec>(r#"{"urls": ["http://h/a"], "speed": 1}"#).is_err());
    }
}
