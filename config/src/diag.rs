//! Diagnostics: every problem found in a config file, each with where it is
//! (file, line:column, key path) and what was expected.

use std::fmt;

use serde::Serialize;

use crate::source::Source;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based; 0 when the problem is not at one place (e.g. the file cannot be read).
    pub line: usize,
    pub column: usize,
    /// Key path, e.g. `pool[0].backends[1].weight`; empty for the file as a whole.
    pub path: String,
    pub message: String,
    /// What would have been accepted, when that can be said.
    pub expected: Option<String>,
    /// The source line the problem is on.
    pub snippet: Option<String>,
}

impl Diagnostic {
    /// A problem with the file as a whole (unreadable, not UTF-8).
    pub fn file_level(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: 0,
            column: 0,
            path: String::new(),
            message: message.into(),
            expected: None,
            snippet: None,
        }
    }

    pub(crate) fn at(
        source: &Source,
        offset: usize,
        path: impl Into<String>,
        message: impl Into<String>,
        expected: Option<String>,
    ) -> Self {
        let (line, column) = source.position(offset);
        Self {
            file: source.name().to_string(),
            line,
            column,
            path: path.into(),
            message: source.redact(&message.into()),
            expected,
            snippet: Some(source.masked_line(line)),
        }
    }

    /// The diagnostic with the offending line and a caret under the column.
    pub fn render(&self) -> String {
        let mut out = format!("error: {self}");
        if let Some(snippet) = &self.snippet {
            let gutter = self.line.to_string().len();
            let caret_pad: String = snippet
                .chars()
                .take(self.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            out.push_str(&format!(
                "\n{:gutter$} |\n{} | {snippet}\n{:gutter$} | {caret_pad}^",
                "", self.line, ""
            ));
        }
        out
    }
}

/// A source line as a diagnostic may show it: URL credentials
/// (`scheme://user:password@`) and the values of keys that hold secrets
/// (`token`, `password`, `secret`, …) become `*`, one for each character,
/// so the caret still points at the right column.
pub fn mask_secrets(line: &str) -> String {
    let text = mask_url_credentials(line);
    let mut out: Vec<char> = text.chars().collect();
    // `key = "value"` where the key names a secret, and every value of a
    // header edit (`request_headers`, `response_headers`: credentials for a
    // backend often are).
    let header_edits = text.contains("_headers");
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != '=' {
            i += 1;
            continue;
        }
        let key: String = bytes[..i]
            .iter()
            .rev()
            .skip_while(|c| c.is_whitespace())
            .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '"'))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<String>()
            .trim_matches('"')
            .to_ascii_lowercase();
        let key = key.rsplit('.').next().unwrap_or("").to_string();
        let mut j = i + 1;
        while j < bytes.len() && bytes[j].is_whitespace() {
            j += 1;
        }
        let quote = bytes.get(j).copied();
        if matches!(quote, Some('"') | Some('\'')) && (header_edits || secret_key(&key)) {
            let mut k = j + 1;
            while k < bytes.len() && Some(bytes[k]) != quote {
                out[k] = '*';
                k += 1;
            }
            i = k;
        }
        i += 1;
    }
    out.into_iter().collect()
}

/// `text` with URL credentials (`scheme://user:password@`) as `*`, one
/// for each character.
pub fn mask_url_credentials(text: &str) -> String {
    let mut out: Vec<char> = text.chars().collect();
    let mut search = 0;
    while let Some(i) = text[search..].find("://") {
        let start = search + i + 3;
        let rest = &text[start..];
        let end = rest
            .find(|c: char| c == '/' || c == '"' || c == '\'' || c == '`' || c.is_whitespace())
            .unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            let from = text[..start].chars().count();
            let len = rest[..at].chars().count();
            for c in out.iter_mut().skip(from).take(len) {
                *c = '*';
            }
        }
        search = start;
    }
    out.into_iter().collect()
}

/// Whether a key's value is a secret (`token`, `password`, `authorization`, …).
pub(crate) fn secret_key(key: &str) -> bool {
    !key.ends_with("_env")
        && [
            "token",
            "password",
            "passwd",
            "secret",
            "credential",
            "api_key",
            "apikey",
            "authorization",
            "cookie",
        ]
        .iter()
        .any(|s| key.contains(s))
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        } else {
            write!(f, "{}: ", self.file)?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(expected) = &self.expected {
            write!(f, " (expected {expected})")?;
        }
        Ok(())
    }
}

/// Every problem found in one config file, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    /// All diagnostics with source snippets, separated by blank lines.
    pub fn render(&self) -> String {
        self.0
            .iter()
            .map(Diagnostic::render)
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    pub(crate) fn sort(&mut self) {
        self.0
            .sort_by(|a, b| (a.line, a.column, &a.path).cmp(&(b.line, b.column, &b.path)));
        self.0.dedup();
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_in_snippets() {
        assert_eq!(
            mask_secrets(r#"url = "redis://:hunter2@127.0.0.1:6379"#),
            r#"url = "redis://********@127.0.0.1:6379"#
        );
        assert_eq!(
            mask_secrets(r#"token = "0123456789abcdef""#),
            r#"token = "****************""#
        );
        assert_eq!(
            mask_secrets(r#"admin.token_env = "EDGE_TOKEN""#),
            r#"admin.token_env = "EDGE_TOKEN""#
        );
        assert_eq!(mask_secrets(r#"threads = -1"#), "threads = -1");
        assert_eq!(
            mask_secrets(r#"urls = ["http://u:p@a/x", "http://b/y"]"#),
            r#"urls = ["http://***@a/x", "http://b/y"]"#
        );
        assert_eq!(
            mask_secrets(
                r#"request_headers = { set = { authorization = "Bearer x", x-a = "y" } }"#
            ),
            r#"request_headers = { set = { authorization = "********", x-a = "*" } }"#
        );
        assert_eq!(
            mask_secrets(r#"Authorization = "Basic abc""#),
            r#"Authorization = "*********""#
        );
    }

    #[test]
    fn render_points_at_the_column() {
        let src = Source::new("edge.toml", "[server]\nthreads = -1\n");
        let d = Diagnostic::at(
            &src,
            19,
            "server.threads",
            "must be at least 1",
            Some("an integer ≥ 1".into()),
        );
        assert_eq!(
            d.to_string(),
            "edge.toml:2:11: server.threads: must be at least 1 (expected an integer ≥ 1)"
        );
        assert!(d.render().ends_with("2 | threads = -1\n  |           ^"));
    }
}
