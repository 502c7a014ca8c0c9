//! `server.access_log_format`: the text access log line as a template, as
//! nginx's `log_format`. `$name` or `${name}` is a field of the access log
//! (the names JSON lines use), `$$` a dollar sign; anything else is copied.
//! A field with no value is `-`, as nginx writes it. Values are escaped as
//! nginx escapes them (`"` as `\x22`, `\` as `\x5C`, control bytes and
//! bytes above 0x7E as `\xHH`), so nothing a client sends can end a quoted
//! field or start a line.

use serde::{Serialize, Serializer};

/// A field an access log template may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogField {
    /// The time the line is written, RFC 3339 in UTC (nginx `$time_iso8601`).
    Time,
    /// The same in the Common Log Format (`01/Dec/2026:06:07:28 +0000`,
    /// nginx `$time_local`).
    TimeLocal,
    Listener,
    Client,
    Method,
    Scheme,
    Host,
    Path,
    Query,
    Protocol,
    Status,
    BytesIn,
    Bytes,
    UserAgent,
    Referer,
    RequestId,
    TraceId,
    Route,
    Pool,
    Backend,
    Retries,
    Cache,
    UpstreamMs,
    TotalMs,
    Error,
}

impl LogField {
    /// Every field by its name.
    pub const NAMES: &'static [(&'static str, LogField)] = &[
        ("time", LogField::Time),
        ("time_local", LogField::TimeLocal),
        ("listener", LogField::Listener),
        ("client", LogField::Client),
        ("method", LogField::Method),
        ("scheme", LogField::Scheme),
        ("host", LogField::Host),
        ("path", LogField::Path),
        ("query", LogField::Query),
        ("protocol", LogField::Protocol),
        ("status", LogField::Status),
        ("bytes_in", LogField::BytesIn),
        ("bytes", LogField::Bytes),
        ("user_agent", LogField::UserAgent),
        ("referer", LogField::Referer),
        ("request_id", LogField::RequestId),
        ("trace_id", LogField::TraceId),
        ("route", LogField::Route),
        ("pool", LogField::Pool),
        ("backend", LogField::Backend),
        ("retries", LogField::Retries),
        ("cache", LogField::Cache),
        ("upstream_ms", LogField::UpstreamMs),
        ("total_ms", LogField::TotalMs),
        ("error", LogField::Error),
    ];

    fn named(name: &str) -> Option<LogField> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
    }
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogPart {
    Text(String),
    Field(LogField),
}

/// A parsed `access_log_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogFormat {
    /// As written (what `/config` shows).
    pub text: String,
    pub parts: Vec<LogPart>,
}

impl Serialize for AccessLogFormat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl AccessLogFormat {
    /// Parses a template; the error says where and what went wrong.
    pub fn parse(text: &str) -> Result<AccessLogFormat, String> {
        if let Some(at) = text.find(|c: char| c.is_control()) {
            return Err(format!(
                "a control character (such as a line break) at byte {at}: one request, one line"
            ));
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let offset = text.len() - after.len() - 1;
            if let Some(more) = after.strip_prefix('$') {
                literal.push('$');
                rest = more;
                continue;
            }
            let (name, next) = if let Some(braced) = after.strip_prefix('{') {
                let Some(end) = braced.find('}') else {
                    return Err(format!("`${{` at byte {offset} is not closed by `}}`"));
                };
                (&braced[..end], &braced[end + 1..])
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            if name.is_empty() {
                return Err(format!(
                    "`$` at byte {offset} names no field (write `$$` for a dollar sign)"
                ));
            }
            let Some(field) = LogField::named(name) else {
                return Err(format!("unknown field `${name}` at byte {offset}"));
            };
            if !literal.is_empty() {
                parts.push(LogPart::Text(std::mem::take(&mut literal)));
            }
            parts.push(LogPart::Field(field));
            rest = next;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(LogPart::Text(literal));
        }
        if !parts.iter().any(|p| matches!(p, LogPart::Field(_))) {
            return Err("the template names no field".into());
        }
        Ok(AccessLogFormat {
            text: text.to_string(),
            parts,
        })
    }

    /// The field names a template may use, for error messages.
    pub fn expected() -> String {
        let names: Vec<String> = LogField::NAMES
            .iter()
            .map(|(n, _)| format!("`${n}`"))
            .collect();
        format!("fields {}", names.join(", "))
    }

    /// The line for one request: each field's value from `value` (`None`
    /// is written `-`).
    pub fn render<'a>(
        &self,
        mut value: impl FnMut(LogField) -> Option<std::borrow::Cow<'a, str>>,
    ) -> String {
        let mut out = String::with_capacity(self.text.len() + 64);
        for part in &self.parts {
            match part {
                LogPart::Text(t) => out.push_str(t),
                LogPart::Field(f) => match value(*f) {
                    Some(v) if !v.is_empty() => escape_into(&mut out, &v),
                    _ => out.push('-'),
                },
            }
        }
        out
    }
}

/// Appends `value` as nginx writes a variable in a log line.
fn escape_into(out: &mut String, value: &str) {
    for b in value.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..=0x7e).contains(&b) {
            out.push_str(&format!("\\x{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    #[test]
    fn templates_parse_as_nginx_log_format_does() {
        let f =
            AccessLogFormat::parse("$client - [$time_local] \"$method ${path}x\" $status $$ end")
                .unwrap();
        assert_eq!(
            f.parts,
            [
                LogPart::Field(LogField::Client),
                LogPart::Text(" - [".into()),
                LogPart::Field(LogField::TimeLocal),
                LogPart::Text("] \"".into()),
                LogPart::Field(LogField::Method),
                LogPart::Text(" ".into()),
                LogPart::Field(LogField::Path),
                LogPart::Text("x\" ".into()),
                LogPart::Field(LogField::Status),
                LogPart::Text(" $ end".into()),
            ]
        );
        let line = f.render(|field| match field {
            LogField::Client => Some(Cow::Borrowed("192.0.2.1")),
            LogField::Method => Some(Cow::Borrowed("GET")),
            LogField::Status => Some(Cow::Owned(200.to_string())),
            _ => None,
        });
        assert_eq!(line, "192.0.2.1 - [-] \"GET -x\" 200 $ end");
    }

    #[test]
    fn values_cannot_end_a_field_or_start_a_line() {
        let f = AccessLogFormat::parse("\"$user_agent\" \"$referer\"").unwrap();
        let line = f.render(|field| match field {
            LogField::UserAgent => Some(Cow::Borrowed("evil\" 200 \"forged")),
            LogField::Referer => Some(Cow::Borrowed("a\\x22b\tc\nd é\u{7f}")),
            _ => None,
        });
        assert_eq!(
            line,
            "\"evil\\x22 200 \\x22forged\" \"a\\x5Cx22b\\x09c\\x0Ad \\xC3\\xA9\\x7F\""
        );
    }

    #[test]
    fn bad_templates_say_where() {
        for (text, says) in [
            ("$nope", "unknown field `$nope` at byte 0"),
            ("a $stat", "unknown field `$stat` at byte 2"),
            ("x ${path", "not closed"),
            ("$ x $path", "names no field"),
            ("${} $path", "names no field"),
            ("no fields at all", "names no field"),
            ("$$ only", "names no field"),
            ("ünï $clïent", "unknown field `$cl` at byte 6"),
            ("a\n$client", "control character"),
            ("$client\t$status", "control character"),
        ] {
            let e = AccessLogFormat::parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
