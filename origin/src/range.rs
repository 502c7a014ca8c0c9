//! `Range: bytes=…` parsing (RFC 9110 §14.2).

/// What a Range header asks of a representation of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable Range header: send the whole representation.
    Whole,
    /// Half-open byte ranges `(start, end)`, clipped to the length.
    Ranges(Vec<(u64, u64)>),
    /// Syntactically valid, but no range overlaps the representation (416).
    Unsatisfiable,
}

/// More ranges than this are served as the whole representation.
const MAX_RANGES: usize = 16;

pub fn parse_range(header: &str, len: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    let mut ranges = Vec::new();
    let mut any_valid = false;
    for part in spec.split(',').map(str::trim) {
        let Some((first, last)) = part.split_once('-') else {
            return RangeRequest::Whole;
        };
        let (first, last) = (first.trim(), last.trim());
        let range = if first.is_empty() {
            // Suffix: the last N bytes.
            let Ok(n) = last.parse::<u64>() else {
                return RangeRequest::Whole;
            };
            any_valid = true;
            (n > 0 && len > 0).then(|| (len.saturating_sub(n), len))
        } else {
            let Ok(start) = first.parse::<u64>() else {
                return RangeRequest::Whole;
            };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match last.parse::<u64>() {
                    Ok(l) if l >= start => l.saturating_add(1),
                    _ => return RangeRequest::Whole,
                }
            };
            any_valid = true;
            (start < len).then(|| (start, end.min(len)))
        };
        ranges.extend(range);
    }
    if !any_valid {
        return RangeRequest::Whole;
    }
    if ranges.is_empty() {
        return RangeRequest::Unsatisfiable;
    }
    if ranges.len() > MAX_RANGES {
        return RangeRequest::Whole;
    }
    RangeRequest::Ranges(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    #[test]
    fn single_ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Ranges(vec![(0, 100)]));
        assert_eq!(parse_range("bytes=500-", 1000), Ranges(vec![(500, 1000)]));
        assert_eq!(parse_range("bytes=-100", 1000), Ranges(vec![(900, 1000)]));
        assert_eq!(parse_range("bytes=-5000", 1000), Ranges(vec![(0, 1000)]));
        assert_eq!(
            parse_range("bytes=990-2000", 1000),
            Ranges(vec![(990, 1000)])
        );
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=2000-3000", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), Whole);
        assert_eq!(parse_range("items=0-1", 1000), Whole);
        assert_eq!(parse_range("bytes=abc", 1000), Whole);
        assert_eq!(parse_range("bytes=0-1,x", 1000), Whole);
    }

    #[test]
    fn multiple_ranges() {
        assert_eq!(
            parse_range("bytes=0-9, 20-29, 2000-", 1000),
            Ranges(vec![(0, 10), (20, 30)])
        );
        let many = (0..20)
            .map(|i| format!("{}-{}", i * 10, i * 10 + 1))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(parse_range(&format!("bytes={many}"), 1000), Whole);
    }
}
