//! A loaded config file: its name, text, the line index that turns byte offsets
//! into `line:column`, and the span → key-path index that names where an error is.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One config file's text, with what is needed to point into it.
#[derive(Debug, Clone)]
pub struct Source {
    name: String,
    text: String,
    line_starts: Vec<usize>,
    /// Byte spans of values that are secrets (see [`secret_spans`]).
    secrets: Vec<Range<usize>>,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let secrets = secret_spans(&text);
        Self {
            name: name.into(),
            text,
            line_starts,
            secrets,
        }
    }

    /// Line `line` as a diagnostic may show it: every character of a secret
    /// value (by where it is in the document: a key naming a secret, a
    /// route's header edits), and URL credentials, as `*`, so the caret
    /// still points at the right column.
    pub fn masked_line(&self, line: usize) -> String {
        let start = self
            .line_starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(0);
        let text = self.line_text(line);
        let masked: String = text
            .char_indices()
            .map(|(i, c)| {
                let at = start + i;
                let secret = self.secrets.iter().any(|s| {
                    let quoted = self.text[s.clone()].starts_with(['"', '\'']);
                    if quoted {
                        s.start < at && at + 1 < s.end
                    } else {
                        s.start <= at && at < s.end
                    }
                });
                if secret {
                    '*'
                } else {
                    c
                }
            })
            .collect();
        crate::diag::mask_secrets(&masked)
    }

    /// `text` with every secret value of this file that it quotes replaced
    /// by `<redacted>` (for messages that echo what they complain about).
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for span in &self.secrets {
            let value = self
                .text
                .get(span.clone())
                .unwrap_or("")
                .trim_matches(['"', '\'']);
            if value.len() >= 3 && out.contains(value) {
                out = out.replace(value, "<redacted>");
            }
        }
        crate::diag::mask_url_credentials(&out)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, column + 1)
    }

    /// The text of a 1-based line, without its line break.
    pub fn line_text(&self, line: usize) -> &str {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return "";
        };
        let end = self
            .line_starts
            .get(line)
            .copied()
            .unwrap_or(self.text.len());
        self.text
            .get(start..end)
            .unwrap_or("")
            .trim_end_matches(['\n', '\r'])
    }
}

/// Spans of the values in `text` that are secrets: under a key naming one
/// (`token`, `password`, `authorization`, …; not `*_env`, which names a
/// variable) and the values a route's `request_headers` / `response_headers`
/// set or add (a backend's credentials often are). Best effort on a file
/// that does not parse: what parsed is covered.
fn secret_spans(text: &str) -> Vec<Range<usize>> {
    fn walk(
        value: &Spanned<DeValue<'_>>,
        key: &str,
        secret: bool,
        text: &str,
        out: &mut Vec<Range<usize>>,
    ) {
        match value.get_ref() {
            DeValue::Table(table) => {
                for (k, v) in table.iter() {
                    let k = k.get_ref();
                    // `remove` lists header names, not values: shown.
                    let secret = k != "remove" && (secret || key_is_secret(k));
                    walk(v, k, secret, text, out);
                }
            }
            DeValue::Array(items) => {
                for item in items.iter() {
                    walk(item, key, secret, text, out);
                }
            }
            _ if secret => out.push(value.span()),
            DeValue::String(_) if names_an_endpoint(key) => {
                // Whatever precedes the last `@` of a URL or address is
                // credentials, well-formed or not (`redis//:pw@host`).
                let span = value.span();
                let raw = text.get(span.clone()).unwrap_or("");
                if let Some(at) = raw.rfind('@') {
                    let from = raw[..at]
                        .find("://")
                        .map_or(usize::from(raw.starts_with(['"', '\''])), |i| i + 3);
                    out.push(span.start + from..span.start + at);
                }
            }
            _ => {}
        }
    }
    fn key_is_secret(key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        crate::diag::secret_key(&key) || key.ends_with("_headers")
    }
    fn names_an_endpoint(key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        key == "url" || key.ends_with("_url") || key == "address" || key.ends_with("urls")
    }
    let (doc, _) = DeTable::parse_recoverable(text);
    let mut out = Vec::new();
    for (key, value) in doc.get_ref().iter() {
        let key = key.get_ref();
        walk(value, key, key_is_secret(key), text, &mut out);
    }
    out
}

/// Maps byte spans of a parsed document to the key path that owns them,
/// e.g. `pool[1].backends[0].weight`.
#[derive(Debug, Default)]
pub(crate) struct PathIndex {
    /// (span of a key or value, its path), in document order.
    entries: Vec<(Range<usize>, String)>,
}

impl PathIndex {
    pub(crate) fn build(root: &Spanned<DeTable<'_>>) -> Self {
        let mut index = PathIndex::default();
        index.walk_table(root.get_ref(), "");
        index
    }

    fn walk_table(&mut self, table: &DeTable<'_>, prefix: &str) {
        for (key, value) in table.iter() {
            let path = join_key(prefix, key.get_ref());
            self.entries.push((key.span(), path.clone()));
            self.walk_value(value, &path);
        }
    }

    fn walk_value(&mut self, value: &Spanned<DeValue<'_>>, path: &str) {
        self.entries.push((value.span(), path.to_string()));
        match value.get_ref() {
            DeValue::Table(table) => self.walk_table(table, path),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.walk_value(item, &format!("{path}[{i}]"));
                }
            }
            _ => {}
        }
    }

    /// The most specific path whose span contains `span`.
    pub(crate) fn path_at(&self, span: &Range<usize>) -> Option<&str> {
        self.entries
            .iter()
            .filter(|(s, _)| s.start <= span.start && span.end <= s.end.max(s.start + 1))
            // Narrowest span first; among equal spans (a `[[pool]]` header is
            // both the key `pool` and the item `pool[0]`) the longer path.
            .min_by(|(a, pa), (b, pb)| {
                (a.end - a.start)
                    .cmp(&(b.end - b.start))
                    .then(pb.len().cmp(&pa.len()))
            })
            .map(|(_, p)| p.as_str())
    }
}

/// `prefix.key`, quoting keys that are not bare TOML keys.
pub(crate) fn join_key(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let src = Source::new("t.toml", "a = 1\nbé = \"x\"\n");
        assert_eq!(src.position(0), (1, 1));
        assert_eq!(src.position(4), (1, 5));
        assert_eq!(src.position(6), (2, 1));
        // 'é' is two bytes: the '=' after it is the 4th character.
        assert_eq!(src.position(10), (2, 4));
        assert_eq!(src.line_text(2), "bé = \"x\"");
        assert_eq!(src.line_text(9), "");
    }

    #[test]
    fn secret_values_are_masked_wherever_the_document_puts_them() {
        let text = "[admin]\ntoken = 12345678901234567890\n\n[[route]]\nname = \"r\"\n\
                    [route.request_headers.set]\nX-Custom = \"s3cr3t-value\"\n\
                    [route.request_headers]\nremove = [\"X-Internal\"]\n\
                    [[route]]\nresponse_headers = { add = { \"X-A\" = \"abc\" } }\n\
                    [cluster]\nredis = { password = 'pw-123', url = \"redis://u:pass@h:1\" }\n";
        let src = Source::new("t.toml", text);
        let lines: Vec<String> = (1..=13).map(|l| src.masked_line(l)).collect();
        assert_eq!(lines[1], "token = ********************");
        assert_eq!(lines[6], "X-Custom = \"************\"");
        assert_eq!(lines[8], "remove = [\"X-Internal\"]");
        assert_eq!(
            lines[10],
            "response_headers = { add = { \"X-A\" = \"***\" } }"
        );
        assert_eq!(
            lines[12],
            "redis = { password = '******', url = \"redis://******@h:1\" }"
        );
        // Messages that quote a secret say `<redacted>` instead.
        assert_eq!(
            src.redact("`s3cr3t-value` is not a valid header value"),
            "`<redacted>` is not a valid header value"
        );
        assert_eq!(
            src.redact("cannot parse http://user:pw@backend:80/"),
            "cannot parse http://*******@backend:80/"
        );
        // A file that does not parse is masked as far as it parsed.
        let broken = Source::new("t.toml", "[admin]\ntoken = \"abcdef\"\n[[[\n");
        assert_eq!(broken.masked_line(2), "token = \"******\"");
    }

    #[test]
    fn path_index_names_nested_keys() {
        let text = "[[pool]]\nname = \"a\"\nbackends = [{ address = \"x\", weight = 0 }]\n";
        let doc = DeTable::parse(text).unwrap();
        let index = PathIndex::build(&doc);
        let at = text.find("0 }").unwrap();
        assert_eq!(
            index.path_at(&(at..at + 1)),
            Some("pool[0].backends[0].weight")
        );
    }
}
