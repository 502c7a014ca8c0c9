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
            message: message.into(),
            expected,
            snippet: Some(source.line_text(line).to_string()),
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
