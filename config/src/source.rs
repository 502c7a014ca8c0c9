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
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            name: name.into(),
            text,
            line_starts,
        }
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
