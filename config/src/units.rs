//! Values with units, as operators write them: durations (`"5 s"`, `"300ms"`,
//! `"1m30s"`), byte sizes (`"64 MiB"`, `"512k"`), rates (`"100/s"`).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::Serialize;

/// A TOML scalar of any type, kept as written so validation can say exactly
/// what is wrong with it (a bare number where a unit is needed, say).
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    pub fn type_name(&self) -> &'static str {
        match self {
            Scalar::Str(_) => "a string",
            Scalar::Int(_) => "an integer",
            Scalar::Float(_) => "a float",
            Scalar::Bool(_) => "a boolean",
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Str(s) => write!(f, "{s:?}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v)
                    .map(Scalar::Int)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
        }
        d.deserialize_any(ScalarVisitor)
    }
}

pub const DURATION_EXPECTED: &str =
    "a duration such as \"5s\", \"300ms\", \"1m\" or \"1h30m\" (units: ms, s, m, h, d)";
pub const SIZE_EXPECTED: &str =
    "a size such as \"64 MiB\", \"512k\" or a number of bytes (units: B, k/KiB, m/MiB, g/GiB, t/TiB, KB, MB, GB, TB)";
pub const RATE_EXPECTED: &str = "a rate such as \"100/s\", \"10/m\" or \"5000/h\"";

/// Parses a duration: one or more `<number><unit>` parts, spaces allowed
/// between number and unit and between parts (`"5 s"`, `"1m 30s"`, `"1.5s"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!(
                "{text:?} is not a duration: expected a number at {rest:?}"
            ));
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| {
            format!(
                "{text:?} is not a duration: bad number {:?}",
                &rest[..num_len]
            )
        })?;
        rest = rest[num_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let factor = match unit {
            "ns" | "nanos" => 1e-9,
            "us" | "µs" | "micros" => 1e-6,
            "ms" | "millis" | "msec" => 1e-3,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "week" | "weeks" => 604800.0,
            "" => {
                return Err(format!(
                    "{text:?} has no unit: write \"{}s\" for seconds or \"{}ms\" for milliseconds",
                    &rest_number(s),
                    &rest_number(s)
                ))
            }
            other => return Err(format!("{text:?}: unknown duration unit {other:?}")),
        };
        total += number * factor;
        rest = rest[unit_len..].trim_start();
    }
    if !total.is_finite() || total > 1e12 {
        return Err(format!("{text:?} is too long"));
    }
    Ok(Duration::from_secs_f64(total))
}

fn rest_number(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Parses a byte size: a number with an optional unit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    if num_len == 0 {
        return Err(format!("{text:?} is not a size"));
    }
    let number: f64 = s[..num_len]
        .parse()
        .map_err(|_| format!("{text:?} is not a size"))?;
    let unit = s[num_len..].trim();
    let factor: f64 = match unit {
        "" | "B" | "b" => 1.0,
        "k" | "K" | "KiB" | "kib" => 1024.0,
        "m" | "M" | "MiB" | "mib" => 1024.0 * 1024.0,
        "g" | "G" | "GiB" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "T" | "TiB" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        other => return Err(format!("{text:?}: unknown size unit {other:?}")),
    };
    let bytes = number * factor;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes.round() as u64)
}

/// A number of events per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rate {
    pub count: u64,
    #[serde(with = "duration_serde")]
    pub per: Duration,
}

impl Rate {
    /// Events per second, as a float.
    pub fn per_second(&self) -> f64 {
        self.count as f64 / self.per.as_secs_f64()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, format_duration(self.per))
    }
}

/// Parses `"<count>/<period>"`, where period is a unit (`s`, `m`, `h`) or a duration (`10s`).
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let (count, per) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not a rate: no '/'"))?;
    let count: u64 = count.trim().parse().map_err(|_| {
        format!(
            "{text:?} is not a rate: {:?} is not a whole number",
            count.trim()
        )
    })?;
    let per = per.trim();
    let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
        parse_duration(per)?
    } else {
        parse_duration(&format!("1{per}"))?
    };
    if per.is_zero() {
        return Err(format!("{text:?}: the period must be longer than zero"));
    }
    if count == 0 {
        return Err(format!("{text:?}: the count must be at least 1"));
    }
    Ok(Rate { count, per })
}

/// `"50 Mbit/s"` → 50 000 000 bits/s (SI prefixes, as network rates are),
/// from 100 kbit/s to 1000 Gbit/s.
pub fn parse_bit_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        format!("rate {text:?}: expected a number and a unit, such as \"50 Mbit/s\"")
    })?;
    let scale = match unit.trim() {
        "" | "bit/s" | "bps" => 1.0,
        "kbit/s" | "kbps" | "Kbit/s" | "Kbps" => 1e3,
        "Mbit/s" | "Mbps" => 1e6,
        "Gbit/s" | "Gbps" => 1e9,
        other => {
            return Err(format!(
                "rate {text:?}: unknown unit {other:?} (bit/s, kbit/s, Mbit/s, Gbit/s; or bps, kbps, Mbps, Gbps)"
            ))
        }
    };
    let bits = n * scale;
    if !(100_000.0..=1e12).contains(&bits) {
        return Err(format!("rate {text:?}: from 100 kbit/s to 1000 Gbit/s"));
    }
    Ok(bits as u64)
}

/// Formats a duration the way the parser reads it back (`"1m30s"`, `"250ms"`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return if d.is_zero() {
            "0s".into()
        } else {
            format!("{}us", d.as_micros())
        };
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if secs > 0 || out.is_empty() {
        out.push_str(&format!("{secs}s"));
    }
    out
}

/// Serialises durations as strings the parser accepts, for `/config` output.
pub mod duration_serde {
    use super::format_duration;
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub mod option {
        use super::*;
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_some(&format_duration(*d)),
                None => s.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_from_the_issue() {
        assert_eq!(parse_duration("5 s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("5 parsecs")
            .unwrap_err()
            .contains("unknown duration unit"));
    }

    #[test]
    fn durations_compound_and_fractional() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1..2s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512k"), Ok(512 * 1024));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(
            parse_rate("100/s"),
            Ok(Rate {
                count: 100,
                per: Duration::from_secs(1)
            })
        );
        assert_eq!(
            parse_rate("10 / 1m").map(|r| r.per),
            Ok(Duration::from_secs(60))
        );
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("10").is_err());
        assert!(parse_rate("x/s").is_err());
        assert!(parse_rate("5/0s").is_err());
    }

    #[test]
    fn format_round_trips() {
        for d in ["1h30m", "250ms", "0s", "2d", "45s", "1m5s"] {
            let parsed = parse_duration(d).unwrap();
            assert_eq!(parse_duration(&format_duration(parsed)), Ok(parsed), "{d}");
        }
    }
}
