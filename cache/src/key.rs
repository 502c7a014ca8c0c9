//! Cache keys: host + path + normalized query (+ request headers a route
//! adds), and a slice index for sliced objects.
//!
//! The primary key string is `"{host}{path}[?{query}][#s{slice}][\x1f{headers}]"`.
//! Everything before the first `#` or `\x1f` is the object's URL, which is
//! what purges by URL and prefix match, so a purge reaches every slice and
//! every header variant of a URL.

use edge_config::IgnoreQuery;
use http::HeaderMap;

/// Separates the URL from the slice index in a primary key.
pub const SLICE_MARK: char = '#';
/// Separates the URL (and slice) from header values in a primary key.
pub const HEADER_MARK: char = '\u{1f}';

/// Sorts query parameters and drops ignored ones, so `?b=2&a=1` and
/// `?a=1&b=2` share an entry. Returns `None` when nothing remains.
pub fn normalize_query(query: Option<&str>, ignore: &IgnoreQuery) -> Option<String> {
    let q = query?.trim_start_matches('?');
    if q.is_empty() || matches!(ignore, IgnoreQuery::All) {
        return None;
    }
    let mut pairs: Vec<&str> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let name = p.split_once('=').map_or(*p, |(k, _)| k);
            match ignore {
                IgnoreQuery::Names(names) => !names.iter().any(|n| n == name),
                _ => true,
            }
        })
        .collect();
    if pairs.is_empty() {
        return None;
    }
    pairs.sort_unstable();
    Some(pairs.join("&"))
}

/// The URL part of a key: lower-case host, path, normalized query.
pub fn url(host: &str, path: &str, query: Option<&str>, ignore: &IgnoreQuery) -> String {
    let mut s = String::with_capacity(host.len() + path.len() + 16);
    s.push_str(&host.to_ascii_lowercase());
    s.push_str(if path.is_empty() { "/" } else { path });
    if let Some(q) = normalize_query(query, ignore) {
        s.push('?');
        s.push_str(&q);
    }
    s
}

/// The full primary key for a request: `key_headers` (lower-case names)
/// are the request headers a route adds to its keys.
pub fn primary(
    url: &str,
    slice: Option<u64>,
    key_headers: &[String],
    headers: &HeaderMap,
) -> String {
    let mut s = String::from(url);
    if let Some(i) = slice {
        s.push(SLICE_MARK);
        s.push('s');
        s.push_str(&i.to_string());
    }
    if !key_headers.is_empty() {
        s.push(HEADER_MARK);
        for (i, name) in key_headers.iter().enumerate() {
            if i > 0 {
                s.push('&');
            }
            s.push_str(name);
            s.push('=');
            let values: Vec<&str> = headers
                .get_all(name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            s.push_str(&values.join(","));
        }
    }
    s
}

/// The URL part of a primary key.
pub fn url_of(primary: &str) -> &str {
    let end = primary
        .find([SLICE_MARK, HEADER_MARK])
        .unwrap_or(primary.len());
    &primary[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_sorted_and_filtered() {
        let none = IgnoreQuery::None;
        assert_eq!(
            normalize_query(Some("b=2&a=1"), &none).as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(normalize_query(Some(""), &none), None);
        assert_eq!(normalize_query(None, &none), None);
        assert_eq!(normalize_query(Some("a=1&b=2"), &IgnoreQuery::All), None);
        let names = IgnoreQuery::Names(vec!["token".into(), "utm".into()]);
        assert_eq!(
            normalize_query(Some("token=x&v=2&utm=y"), &names).as_deref(),
            Some("v=2")
        );
        assert_eq!(normalize_query(Some("token=x"), &names), None);
    }

    #[test]
    fn primary_keys_carry_slices_and_headers_after_the_url() {
        let mut h = HeaderMap::new();
        h.insert("accept-language", "nl".parse().unwrap());
        let rule = vec!["accept-language".to_string()];
        let u = url(
            "Video.Example.com",
            "/a.ts",
            Some("z=1&a=2"),
            &IgnoreQuery::None,
        );
        assert_eq!(u, "video.example.com/a.ts?a=2&z=1");
        let p = primary(&u, Some(3), &rule, &h);
        assert_eq!(url_of(&p), u);
        assert!(p.contains("#s3"));
        assert!(p.ends_with("accept-language=nl"));
        assert_ne!(primary(&u, Some(4), &rule, &h), p);
    }
}
