//! `Vary` keys (RFC 9111 §4.1) with normalized request values, so trivial
//! differences do not split the cache: for the route's `vary_normalize`
//! fields the value is its comma-separated tokens trimmed, lower-cased,
//! sorted and deduplicated; with `accept_encoding` set, `Accept-Encoding`
//! is the first listed coding the client accepts (RFC 9110 §12.5.3), or
//! `identity` — and that is also what goes upstream, so what is stored
//! under a key is what the key says.

use edge_config::RouteCache;
use http::header;
use pingora_cache::CacheMeta;
use pingora_http::RequestHeader;

use edge_cache::policy;

/// The best of `preferred` (lower-case, in order) an `Accept-Encoding`
/// value accepts, else `identity`.
pub(crate) fn pick_encoding<'a>(accept: Option<&str>, preferred: &'a [String]) -> &'a str {
    let Some(accept) = accept else {
        return "identity";
    };
    let mut star = None;
    let mut listed: Vec<(String, f32)> = Vec::new();
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        if coding.is_empty() {
            continue;
        }
        let q = parts
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(Some(1.0), |(_, v)| v.trim().parse::<f32>().ok())
            .unwrap_or(0.0);
        if coding == "*" {
            star = Some(q);
        } else {
            listed.push((coding, q));
        }
    }
    preferred
        .iter()
        .find(|c| {
            let q = listed
                .iter()
                .find(|(l, _)| l == *c)
                .map(|(_, q)| *q)
                .or(star)
                .unwrap_or(0.0);
            q > 0.0
        })
        .map_or("identity", String::as_str)
}

/// A normalized field value: tokens trimmed, lower-cased, sorted, unique.
fn normalize_tokens(values: &[&[u8]]) -> Vec<u8> {
    let mut tokens: Vec<String> = values
        .iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|t| String::from_utf8_lossy(t).trim().to_ascii_lowercase())
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(""))
        .filter(|t| !t.is_empty())
        .collect();
    tokens.sort_unstable();
    tokens.dedup();
    tokens.join(",").into_bytes()
}

/// The variance of a stored response for this request (`Vary`).
pub(crate) fn variance(
    meta: &CacheMeta,
    req: &RequestHeader,
    route: &RouteCache,
) -> Option<pingora_cache::key::HashBinary> {
    let mut names = policy::header_tokens(meta.headers(), header::VARY);
    if names.is_empty() {
        return None;
    }
    names.sort_unstable();
    names.dedup();
    let mut vb = pingora_cache::VarianceBuilder::new();
    for name in names {
        let raw: Vec<&[u8]> = req
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        let value: Vec<u8> = if name == "accept-encoding" && !route.accept_encoding.is_empty() {
            let accept = req
                .headers
                .get(header::ACCEPT_ENCODING)
                .and_then(|v| v.to_str().ok());
            pick_encoding(accept, &route.accept_encoding)
                .as_bytes()
                .to_vec()
        } else if route.vary_normalize.contains(&name) {
            normalize_tokens(&raw)
        } else {
            raw.iter()
                .flat_map(|v| v.iter().copied().chain(std::iter::once(b',')))
                .collect()
        };
        vb.add_owned_name_value(name, value);
    }
    vb.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_picked_by_preference_and_q() {
        let pref = vec!["br".to_string(), "gzip".to_string()];
        for (accept, want) in [
            (Some("gzip, deflate, br"), "br"),
            (Some("GZIP"), "gzip"),
            (Some("br;q=0, gzip"), "gzip"),
            (Some("br;q=0.0, gzip;q=0"), "identity"),
            (Some("*"), "br"),
            (Some("*;q=0, gzip;q=0.5"), "gzip"),
            (Some("deflate"), "identity"),
            (Some(""), "identity"),
            (Some("br;q=abc"), "identity"),
            (None, "identity"),
        ] {
            assert_eq!(pick_encoding(accept, &pref), want, "{accept:?}");
        }
    }

    #[test]
    fn trivial_differences_normalize_away() {
        let a = normalize_tokens(&[b"gzip, br"]);
        assert_eq!(a, normalize_tokens(&[b"br,gzip"]));
        assert_eq!(a, normalize_tokens(&[b" BR , Gzip ,gzip"]));
        assert_eq!(a, normalize_tokens(&[b"br", b"gzip"]));
        assert_ne!(a, normalize_tokens(&[b"gzip"]));
        assert_ne!(normalize_tokens(&[b"br;q=0"]), normalize_tokens(&[b"br"]));
    }
}
