//! Fault injection: added latency, an error rate, aborting mid-body, slow
//! drip. Set globally (`POST /_origin/faults`, `--fault`) or per request with
//! the `X-Origin-Fault` header or the `fault` query parameter, in the syntax
//! `latency=200ms, error=503@0.5, abort=1000, drip=1024/100ms`.

use std::time::Duration;

use serde::Serialize;

/// Slow delivery: `bytes` at a time, one chunk per `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Drip {
    pub bytes: usize,
    #[serde(serialize_with = "ser_ms")]
    pub every: Duration,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", d.as_millis()))
}

fn ser_opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&format!("{}ms", d.as_millis())),
        None => s.serialize_none(),
    }
}

/// Faults to inject. Unset fields leave behaviour alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Faults {
    /// Wait this long before answering.
    #[serde(serialize_with = "ser_opt_ms")]
    pub latency: Option<Duration>,
    /// Answer `(status, probability)` instead of the content.
    pub error: Option<(u16, f64)>,
    /// Send this many body bytes, then drop the connection.
    pub abort_after: Option<u64>,
    pub drip: Option<Drip>,
}

impl Faults {
    pub fn is_empty(&self) -> bool {
        *self == Faults::default()
    }

    /// `other`'s fields where set, else ours.
    pub fn overlaid(&self, other: &Faults) -> Faults {
        Faults {
            latency: other.latency.or(self.latency),
            error: other.error.or(self.error),
            abort_after: other.abort_after.or(self.abort_after),
            drip: other.drip.or(self.drip),
        }
    }

    /// Whether this request should fail, by the error probability.
    pub fn error_now(&self) -> Option<u16> {
        match self.error {
            Some((status, p)) if p >= 1.0 || fastrand::f64() < p => Some(status),
            _ => None,
        }
    }

    /// Parses `latency=200ms, error=503@0.5, abort=1000, drip=1024/100ms`.
    pub fn parse(text: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        for item in text
            .split([',', ';'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: expected key=value"))?;
            let value = value.trim();
            match key.trim() {
                "latency" => f.latency = Some(duration(value)?),
                "error" => {
                    let (status, rate) = match value.split_once('@') {
                        Some((s, r)) => (s, r),
                        None if value.contains('.') => ("503", value),
                        None => (value, "1"),
                    };
                    let status: u16 = status
                        .parse()
                        .ok()
                        .filter(|s| (400..600).contains(s))
                        .ok_or_else(|| format!("error={value}: status must be 400-599"))?;
                    let rate: f64 = rate
                        .parse()
                        .ok()
                        .filter(|r| (0.0..=1.0).contains(r))
                        .ok_or_else(|| format!("error={value}: rate must be 0.0-1.0"))?;
                    f.error = Some((status, rate));
                }
                "abort" => {
                    f.abort_after = Some(
                        value
                            .parse()
                            .map_err(|_| format!("abort={value}: expected a byte count"))?,
                    )
                }
                "drip" => {
                    let (bytes, every) = value.split_once('/').ok_or_else(|| {
                        format!("drip={value}: expected BYTES/INTERVAL, e.g. 1024/100ms")
                    })?;
                    let bytes: usize = bytes
                        .parse()
                        .ok()
                        .filter(|b| *b > 0)
                        .ok_or_else(|| format!("drip={value}: bytes must be > 0"))?;
                    f.drip = Some(Drip {
                        bytes,
                        every: duration(every)?,
                    });
                }
                other => {
                    return Err(format!(
                        "unknown fault {other:?} (latency, error, abort, drip)"
                    ))
                }
            }
        }
        Ok(f)
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(
        t.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration like 200ms"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{text:?}: expected a duration like 200ms or 2s")),
    };
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("{text:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_fault() {
        let f =
            Faults::parse("latency=200ms, error=502@0.25; abort=1000, drip=1024/100ms").unwrap();
        assert_eq!(f.latency, Some(Duration::from_millis(200)));
        assert_eq!(f.error, Some((502, 0.25)));
        assert_eq!(f.abort_after, Some(1000));
        assert_eq!(
            f.drip,
            Some(Drip {
                bytes: 1024,
                every: Duration::from_millis(100)
            })
        );
        assert_eq!(Faults::parse("error=503").unwrap().error, Some((503, 1.0)));
        assert_eq!(Faults::parse("error=0.5").unwrap().error, Some((503, 0.5)));
        assert!(Faults::parse("").unwrap().is_empty());
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "latency",
            "latency=5 parsecs",
            "error=200",
            "error=503@2",
            "drip=0/1s",
            "explode=1",
        ] {
            assert!(Faults::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overlay_prefers_the_request() {
        let global = Faults::parse("latency=1s, error=503@0.1").unwrap();
        let req = Faults::parse("latency=5ms").unwrap();
        let f = global.overlaid(&req);
        assert_eq!(f.latency, Some(Duration::from_millis(5)));
        assert_eq!(f.error, Some((503, 0.1)));
    }

    #[test]
    fn certain_errors_always_fire_and_zero_never() {
        let always = Faults::parse("error=500@1").unwrap();
        let never = Faults::parse("error=500@0").unwrap();
        for _ in 0..100 {
            assert_eq!(always.error_now(), Some(500));
            assert_eq!(never.error_now(), None);
        }
    }
}
