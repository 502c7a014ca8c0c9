//! RFC 1035 §5 master files ("zone files") and the record values of the
//! TOML `records` table, through one scanner: NLnet Labs' `domain`
//! (`$ORIGIN`, `$TTL`, `$INCLUDE`, relative names, `@`, parentheses,
//! comments, `\DDD` escapes, every record type it knows and any other in
//! RFC 3597 generic form `\# <len> <hex>`). A record comes out with its owner
//! and data in uncompressed wire form, which the DNS server decodes, and in
//! presentation form for `/config` and messages: what `edge check` accepts
//! is exactly what `edge run` loads.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use domain::base::iana::Class;
use domain::base::name::{Name, ToName};
use domain::base::rdata::ComposeRecordData;
use domain::base::RecordData as _;
use domain::rdata::ZoneRecordData;
use domain::zonefile::inplace::{Entry, Zonefile};
use serde::Serialize;

/// The largest zone file edge reads, with its includes (bytes).
pub const MAX_ZONE_FILE_BYTES: u64 = 256 << 20;
/// How deep `$INCLUDE`s may nest.
const MAX_INCLUDE_DEPTH: usize = 8;

/// One resource record of a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoneRecord {
    /// Absolute owner name, presentation form (`www.example.`).
    pub name: String,
    pub ttl: u32,
    /// The type's mnemonic (`MX`), or `TYPE<n>` for one without.
    #[serde(rename = "type")]
    pub rtype: String,
    /// The record data in presentation form.
    pub value: String,
    /// Where it was read (`file:line`, or the TOML key path).
    #[serde(skip)]
    pub origin: String,
    #[serde(skip)]
    pub wire: WireRecord,
}

/// A record in wire form: owner (uncompressed labels), type, data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WireRecord {
    pub owner: Vec<u8>,
    pub rtype: u16,
    pub rdata: Vec<u8>,
}

/// SOA fields, from a zone file's apex SOA record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoaFields {
    pub ttl: u32,
    pub mname: String,
    pub rname: String,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
}

/// A problem in a zone file or a record value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneFileError {
    /// The file (absent for a TOML record value).
    pub file: Option<PathBuf>,
    /// 1-based; 0 when not at a line (an unreadable file).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ZoneFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.file, self.line) {
            (Some(file), 0) => write!(f, "{}: {}", file.display(), self.message),
            (Some(file), l) => write!(
                f,
                "{}:{l}:{}: {}",
                file.display(),
                self.column,
                self.message
            ),
            (None, _) => f.write_str(&self.message),
        }
    }
}

/// What a scan produced.
#[derive(Debug, Default)]
pub struct Scanned {
    pub records: Vec<ZoneRecord>,
    pub soa: Option<SoaFields>,
}

/// Reads zone file `path` (and its `$INCLUDE`s) for zone `origin`
/// (absolute, `example.`); records without a TTL and no `$TTL` before them
/// get `default_ttl` (seconds).
pub fn load(path: &Path, origin: &str, default_ttl: u32) -> Result<Scanned, ZoneFileError> {
    let mut out = Scanned::default();
    let mut budget = MAX_ZONE_FILE_BYTES;
    load_into(path, origin, default_ttl, 0, &mut budget, &mut out)?;
    Ok(out)
}

fn file_error(path: &Path, line: usize, column: usize, message: String) -> ZoneFileError {
    ZoneFileError {
        file: Some(path.to_path_buf()),
        line,
        column,
        message,
    }
}

fn load_into(
    path: &Path,
    origin: &str,
    default_ttl: u32,
    depth: usize,
    budget: &mut u64,
    out: &mut Scanned,
) -> Result<(), ZoneFileError> {
    let refuse = |m: String| file_error(path, 0, 0, m);
    let meta = std::fs::metadata(path).map_err(|e| refuse(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(refuse("not a regular file".to_string()));
    }
    if meta.len() > *budget || *budget < (64 << 10) {
        return Err(refuse(format!(
            "zone data larger than {MAX_ZONE_FILE_BYTES} bytes"
        )));
    }
    // Each file costs at least 64 KiB of the budget: a fan-out of empty
    // includes ends too.
    *budget = budget.saturating_sub(meta.len().max(64 << 10));
    let bytes = std::fs::read(path).map_err(|e| refuse(format!("cannot read: {e}")))?;
    let text = ascii_escaped(&bytes);
    let includes = scan(
        &text,
        origin,
        default_ttl,
        &path.display().to_string(),
        |line, column, message| file_error(path, line, column, message),
        out,
    )?;
    for (line, include_ttl, include, include_origin) in includes {
        if depth + 1 >= MAX_INCLUDE_DEPTH {
            return Err(file_error(
                path,
                line,
                1,
                format!("$INCLUDE nested deeper than {MAX_INCLUDE_DEPTH}"),
            ));
        }
        let target = match Path::new(&include) {
            p if p.is_absolute() => p.to_path_buf(),
            p => path.parent().unwrap_or(Path::new(".")).join(p),
        };
        let sub_origin = include_origin.unwrap_or_else(|| origin.to_string());
        load_into(&target, &sub_origin, include_ttl, depth + 1, budget, out).map_err(|e| {
            if e.line == 0 {
                file_error(
                    path,
                    line,
                    1,
                    format!("$INCLUDE {}: {}", include, e.message),
                )
            } else {
                e
            }
        })?;
    }
    Ok(())
}

/// Scans one record value of the TOML `records` table: `owner ttl IN type
/// value` with `origin` for relative names.
pub fn record(
    owner: &str,
    ttl: u32,
    rtype: &str,
    value: &str,
    origin: &str,
) -> Result<ZoneRecord, String> {
    // One entry per line: a value with a line break would be two entries.
    if value.contains(['\n', '\r']) || owner.contains(['\n', '\r', ' ', '\t', ';']) {
        return Err("one line only".to_string());
    }
    let generic;
    let (rtype, value) = if rtype.eq_ignore_ascii_case("LOC") {
        generic = loc_generic(value)
            .ok_or("not LOC data (RFC 1876: \"52 22 23.000 N 4 53 32.000 E -2.00m\")")?;
        ("TYPE29", generic.as_str())
    } else {
        (rtype, value)
    };
    let text = ascii_escaped(format!("{owner} {ttl} IN {rtype} {value}\n").as_bytes());
    let mut out = Scanned::default();
    let includes = scan(
        &text,
        origin,
        ttl,
        "",
        |_, _, message| ZoneFileError {
            file: None,
            line: 0,
            column: 0,
            message,
        },
        &mut out,
    )
    .map_err(|e| e.message)?;
    if !includes.is_empty() {
        return Err("not a record".to_string());
    }
    match (out.records.len(), out.records.pop()) {
        (1, Some(r)) => Ok(r),
        _ => Err("expected exactly one record".to_string()),
    }
}

/// An `$INCLUDE` met: its line, the `$TTL` then, the path, the origin.
type Include = (usize, u32, String, Option<String>);

/// Scans `text`; returns the `$INCLUDE`s found, to be read after it.
fn scan(
    text: &str,
    origin: &str,
    default_ttl: u32,
    where_: &str,
    error: impl Fn(usize, usize, String) -> ZoneFileError,
    out: &mut Scanned,
) -> Result<Vec<Include>, ZoneFileError> {
    let origin_name: Name<Bytes> = origin
        .parse()
        .map_err(|e| error(0, 0, format!("zone name {origin:?}: {e}")))?;
    // `$TTL` first so records without a TTL take the zone's default; its
    // line is not the file's, hence the `- 1` below.
    if let Some((line, what)) = unclosed(text) {
        return Err(error(
            line,
            1,
            format!("{what} opened here is never closed"),
        ));
    }
    // The scanner needs each entry ended by a line break, the last too.
    let buf = format!("$TTL {default_ttl}\n{}\n", expand_at(text, origin));
    let mut zone = Zonefile::with_capacity(buf.len());
    zone.extend_from_slice(buf.as_bytes());
    zone.set_origin(origin_name.clone());
    zone.set_default_class(Class::IN);
    let mut includes = Vec::new();
    let lines = entry_lines(text);
    let mut entries = 0usize;
    loop {
        let line_now = lines.get(entries).copied().unwrap_or(0);
        // The scanner is a library's; should it panic on some input, that
        // input is an error here, never a crash of edge.
        let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| zone.next_entry()));
        let Ok(next) = next else {
            return Err(error(
                line_now.max(1),
                1,
                "cannot be read as a zone file entry".to_string(),
            ));
        };
        let entry = match next {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => {
                let shown = e.to_string();
                let mut parts = shown.splitn(3, ':');
                let line = parts.next().and_then(|l| l.trim().parse::<usize>().ok());
                let col = parts.next().and_then(|c| c.trim().parse::<usize>().ok());
                // The scanner reports where it stopped, which can be past
                // the entry's end: the entry's own first line is ours.
                let (line, col, msg) = match (line, col, parts.next()) {
                    (Some(l), Some(c), Some(m)) if line_now == 0 => {
                        (l.saturating_sub(1).max(1), c, m.trim().to_string())
                    }
                    (Some(_), Some(_), Some(m)) => (line_now, 1, m.trim().to_string()),
                    _ => (line_now.max(1), 1, shown.clone()),
                };
                return Err(error(line, col, msg));
            }
        };
        entries += 1;
        match entry {
            Entry::Include { path, origin } => {
                // Without an origin of its own, the file is read with the
                // origin in effect where the `$INCLUDE` is (RFC 1035 §5.1).
                let origin = origin.or_else(|| zone.origin().ok());
                includes.push((
                    line_now,
                    ttl_at(text, line_now).unwrap_or(default_ttl),
                    path.to_string(),
                    origin.map(|o| o.to_string()).map(|o| {
                        if o.ends_with('.') {
                            o
                        } else {
                            format!("{o}.")
                        }
                    }),
                ));
            }
            Entry::Record(r) => {
                if r.class() != Class::IN {
                    return Err(error(
                        line_now,
                        1,
                        format!("class {} (edge serves class IN only)", r.class()),
                    ));
                }
                let mut owner = Vec::new();
                r.owner()
                    .compose(&mut owner)
                    .map_err(|_| error(line_now, 1, "owner name too long".to_string()))?;
                let mut rdata = Vec::new();
                r.data()
                    .compose_rdata(&mut rdata)
                    .map_err(|_| error(line_now, 1, "record data too long".to_string()))?;
                if rdata.len() > usize::from(u16::MAX) {
                    return Err(error(line_now, 1, "record data too long".to_string()));
                }
                let name = presentation_name(&r.owner().to_string());
                if let ZoneRecordData::Soa(soa) = r.data() {
                    if r.owner().name_eq(&origin_name) && out.soa.is_some() {
                        return Err(error(
                            line_now,
                            1,
                            "a second SOA at the zone apex".to_string(),
                        ));
                    }
                    if r.owner().name_eq(&origin_name) && out.soa.is_none() {
                        out.soa = Some(SoaFields {
                            ttl: r.ttl().as_secs(),
                            mname: presentation_name(&soa.mname().to_string()),
                            rname: presentation_name(&soa.rname().to_string()),
                            serial: soa.serial().into_int(),
                            refresh: soa.refresh().as_secs(),
                            retry: soa.retry().as_secs(),
                            expire: soa.expire().as_secs(),
                            minimum: soa.minimum().as_secs(),
                        });
                    }
                }
                out.records.push(ZoneRecord {
                    name,
                    ttl: r.ttl().as_secs(),
                    rtype: r.data().rtype().to_string(),
                    value: root_names(&r.data().to_string()),
                    origin: if where_.is_empty() {
                        String::new()
                    } else {
                        format!("{where_}:{line_now}")
                    },
                    wire: WireRecord {
                        owner,
                        rtype: r.data().rtype().to_int(),
                        rdata,
                    },
                });
            }
        }
    }
    Ok(includes)
}

/// The scanner shows a root name in record data as `..`; it is `.`.
fn root_names(value: &str) -> String {
    value
        .split(' ')
        .map(|t| if t == ".." { "." } else { t })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Absolute presentation form, lower-case (names compare without case).
fn presentation_name(s: &str) -> String {
    let s = s.to_ascii_lowercase();
    if s.ends_with('.') {
        s
    } else {
        format!("{s}.")
    }
}

/// `text` with every `@` that stands alone as a token (outside quotes and
/// comments) replaced by the origin in effect there (RFC 1035 §5.1: `@`
/// is the current origin wherever a name goes, record data included;
/// the scanner knows it only as an owner). Lines are kept as they are.
fn expand_at(text: &str, origin: &str) -> String {
    let mut origin = origin.to_string();
    let mut out = String::with_capacity(text.len());
    let mut quoted = false;
    let mut depth = 0usize;
    for line in text.split_inclusive('\n') {
        if !quoted && line.len() >= 7 && line[..7].eq_ignore_ascii_case("$ORIGIN") {
            if let Some(name) = line[7..].split(';').next().map(str::trim) {
                if !name.is_empty() && name != "@" {
                    origin = if name.ends_with('.') {
                        name.to_string()
                    } else {
                        format!("{name}.{origin}")
                    };
                }
            }
            out.push_str(line);
            continue;
        }
        let converted;
        let line = if !quoted && depth == 0 {
            match loc_line(line).or_else(|| ttl_units(line)) {
                Some(l) => {
                    converted = l;
                    converted.as_str()
                }
                None => line,
            }
        } else {
            line
        };
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        let mut comment = false;
        while i < chars.len() {
            let c = chars[i];
            if comment {
                out.push(c);
                i += 1;
                continue;
            }
            match c {
                '\\' => {
                    out.push(c);
                    if let Some(&n) = chars.get(i + 1) {
                        out.push(n);
                    }
                    i += 2;
                    continue;
                }
                '"' => quoted = !quoted,
                ';' if !quoted => comment = true,
                '(' if !quoted => depth += 1,
                ')' if !quoted => depth = depth.saturating_sub(1),
                '@' if !quoted => {
                    let boundary = |c: Option<&char>| {
                        c.is_none_or(|c| c.is_whitespace() || *c == '(' || *c == ')')
                    };
                    if boundary(i.checked_sub(1).and_then(|p| chars.get(p)))
                        && boundary(chars.get(i + 1))
                    {
                        out.push_str(&origin);
                        i += 1;
                        continue;
                    }
                }
                _ => {}
            }
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The `$TTL` in effect before line `line` (1-based) of `text`: an
/// included file starts with it (as NSD and BIND read it).
fn ttl_at(text: &str, line: usize) -> Option<u32> {
    text.lines()
        .take(line.saturating_sub(1))
        .filter_map(|l| {
            let l = l.split(';').next()?.trim_end();
            let rest = l.get(..4).filter(|d| d.eq_ignore_ascii_case("$TTL"))?;
            let _ = rest;
            parse_ttl(l[4..].trim())
        })
        .last()
}

/// A TTL as zone files write it: seconds, or units (`1h30m`, `2d`).
fn parse_ttl(t: &str) -> Option<u32> {
    if let Ok(n) = t.parse::<u32>() {
        return Some(n);
    }
    let mut total: u64 = 0;
    let mut n: u64 = 0;
    let mut digits = false;
    for c in t.chars() {
        if let Some(d) = c.to_digit(10) {
            n = n.checked_mul(10)?.checked_add(u64::from(d))?;
            digits = true;
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        if !digits {
            return None;
        }
        total = total.checked_add(n.checked_mul(unit)?)?;
        n = 0;
        digits = false;
    }
    if digits {
        return None;
    }
    u32::try_from(total).ok()
}

/// Zone-file bytes as ASCII text: every byte above 0x7f becomes the
/// `\DDD` escape that stands for it (RFC 1035 §5.1), so a Latin-1 or UTF-8
/// byte in a string or a name is kept as the byte it is.
fn ascii_escaped(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\{b:03}"));
        }
    }
    out
}

/// A `$TTL` directive or a record line whose TTL has units (`1h30m`,
/// `2D`, as BIND and NSD read them) with the TTL in seconds, which is all
/// the scanner takes; `None` when there is nothing to convert.
fn ttl_units(line: &str) -> Option<String> {
    let has_unit = |t: &str| {
        t.chars().next().is_some_and(|c| c.is_ascii_digit())
            && t.chars().any(|c| c.is_ascii_alphabetic())
    };
    let (body, comment) = match line.find(';') {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, ""),
    };
    let end = if body.ends_with('\n') { "\n" } else { "" };
    if body
        .get(..4)
        .is_some_and(|d| d.eq_ignore_ascii_case("$TTL"))
    {
        let value = body[4..].trim();
        if !has_unit(value) {
            return None;
        }
        let secs = parse_ttl(value)?;
        return Some(format!("$TTL {secs} {comment}").trim_end().to_string() + "\n");
    }
    let owner = !line.starts_with([' ', '\t']);
    let tokens: Vec<&str> = body.split_whitespace().collect();
    let start = usize::from(owner);
    // The TTL and class come before the type: at most two tokens.
    let mut changed = false;
    let mut out: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    for t in out.iter_mut().skip(start).take(2) {
        if has_unit(t) {
            *t = parse_ttl(t)?.to_string();
            changed = true;
        } else if !(t.chars().all(|c| c.is_ascii_digit())
            || ["IN", "CH", "HS", "CS"]
                .iter()
                .any(|c| t.eq_ignore_ascii_case(c)))
        {
            break;
        }
    }
    if !changed {
        return None;
    }
    let lead = if owner { "" } else { " " };
    let _ = end;
    Some(
        format!("{lead}{} {comment}", out.join(" "))
            .trim_end()
            .to_string()
            + "\n",
    )
}

/// RFC 1876 LOC data in presentation form (`52 22 23.000 N 4 53 32.000 E
/// -2.00m 0.00m 10000m 10m`) as its 16-byte wire form, which the scanner
/// lacks a parser for: RFC 3597 generic text (`\# 16 …`).
pub fn loc_generic(text: &str) -> Option<String> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let mut i = 0;
    // d [m [s]] N|S, then d [m [s]] E|W: thousandths of an arc second.
    let mut angle = |positive: &str, negative: &str, max_deg: f64| -> Option<i64> {
        let mut parts = Vec::new();
        while let Some(t) = tokens.get(i) {
            i += 1;
            if t.eq_ignore_ascii_case(positive) || t.eq_ignore_ascii_case(negative) {
                let sign = if t.eq_ignore_ascii_case(positive) {
                    1
                } else {
                    -1
                };
                let (d, m, s) = match parts.as_slice() {
                    [d] => (*d, 0.0, 0.0),
                    [d, m] => (*d, *m, 0.0),
                    [d, m, s] => (*d, *m, *s),
                    _ => return None,
                };
                if !(0.0..=max_deg).contains(&d)
                    || !(0.0..60.0).contains(&m)
                    || !(0.0..60.0).contains(&s)
                {
                    return None;
                }
                let ms = ((d * 3600.0 + m * 60.0 + s) * 1000.0).round() as i64;
                return Some(sign * ms);
            }
            parts.push(t.parse::<f64>().ok().filter(|v: &f64| v.is_finite())?);
            if parts.len() > 3 {
                return None;
            }
        }
        None
    };
    let lat = angle("N", "S", 90.0)?;
    let lon = angle("E", "W", 180.0)?;
    let metres = |t: &str| -> Option<f64> {
        t.strip_suffix(['m', 'M'])
            .unwrap_or(t)
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
    };
    let rest = &tokens[i..];
    let alt = metres(rest.first()?)?;
    // Size and precisions: cm as mantissa × 10^exponent, one octet.
    let precision = |t: Option<&&str>, default: f64| -> Option<u8> {
        let m = match t {
            Some(t) => metres(t)?,
            None => default,
        };
        let mut cm = (m * 100.0).round();
        if !(0.0..=9e9).contains(&cm) {
            return None;
        }
        let mut exponent = 0u8;
        while cm >= 10.0 {
            cm /= 10.0;
            exponent += 1;
        }
        Some(((cm as u8) << 4) | exponent)
    };
    if rest.len() > 4 {
        return None;
    }
    let size = precision(rest.get(1), 1.0)?;
    let horizontal = precision(rest.get(2), 10_000.0)?;
    let vertical = precision(rest.get(3), 10.0)?;
    let altitude = (alt * 100.0).round() + 10_000_000.0;
    if !(0.0..=f64::from(u32::MAX)).contains(&altitude) {
        return None;
    }
    let mut wire = vec![0u8, size, horizontal, vertical];
    wire.extend_from_slice(&((1i64 << 31) + lat).to_be_bytes()[4..]);
    wire.extend_from_slice(&((1i64 << 31) + lon).to_be_bytes()[4..]);
    wire.extend_from_slice(&(altitude as u32).to_be_bytes());
    let hex: String = wire.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("\\# 16 {hex}"))
}

/// A zone-file line whose record is of type LOC, with its data in generic
/// form (see [`loc_generic`]); `None` for any other line. The type must
/// follow the owner (when the line starts with one), a TTL and a class.
fn loc_line(line: &str) -> Option<String> {
    let (body, comment) = match line.find(';') {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, ""),
    };
    let owner = !line.starts_with([' ', '\t']);
    let tokens: Vec<&str> = body.split_whitespace().collect();
    let start = usize::from(owner);
    let at = start
        + tokens
            .iter()
            .skip(start)
            .position(|t| t.eq_ignore_ascii_case("LOC"))?;
    let before = tokens.get(start..at)?;
    let ttl_or_class = |t: &&str| {
        t.chars().next().is_some_and(|c| c.is_ascii_digit())
            || ["IN", "CH", "HS", "CS"]
                .iter()
                .any(|c| t.eq_ignore_ascii_case(c))
    };
    if !before.iter().all(ttl_or_class) {
        return None;
    }
    let data = loc_generic(&tokens[at + 1..].join(" "))?;
    let head = tokens[..at].join(" ");
    let lead = if owner { "" } else { " " };
    Some(
        format!("{lead}{head} TYPE29 {data} {comment}")
            .trim_end()
            .to_string()
            + "\n",
    )
}

/// The 1-based line each entry of `text` starts on, in order: records and
/// `$INCLUDE`s (the scanner's entries; `$ORIGIN` and `$TTL` are not),
/// following RFC 1035 §5.1 syntax: parentheses continue an entry over
/// lines, `;` starts a comment, `"` quotes, `\` escapes one character.
fn entry_lines(text: &str) -> Vec<usize> {
    entry_scan(text).0
}

/// Where a parenthesis or a quote left open at the end of `text` was
/// opened (1-based line): RFC 1035 §5.1 groups end before the file does.
fn unclosed(text: &str) -> Option<(usize, &'static str)> {
    entry_scan(text).1
}

fn entry_scan(text: &str) -> (Vec<usize>, Option<(usize, &'static str)>) {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut opened = (0usize, 0usize);
    for (i, line) in text.lines().enumerate() {
        if depth == 0 && !quoted {
            let t = line.trim_start();
            let content = !t.is_empty() && !t.starts_with(';');
            let directive = t.starts_with('$') && line.starts_with('$');
            if content
                && (!directive
                    || t.get(..8)
                        .is_some_and(|d| d.eq_ignore_ascii_case("$INCLUDE")))
            {
                out.push(i + 1);
            }
        }
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    quoted = !quoted;
                    if quoted {
                        opened.1 = i + 1;
                    }
                }
                ';' if !quoted => break,
                '(' if !quoted => {
                    if depth == 0 {
                        opened.0 = i + 1;
                    }
                    depth += 1
                }
                ')' if !quoted => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    let open = if quoted {
        Some((opened.1, "a quote"))
    } else if depth > 0 {
        Some((opened.0, "a parenthesis"))
    } else {
        None
    };
    (out, open)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mutated zone text (bounded, fixed seed): an error or records, never
    /// a panic, from the scanner and edge's passes before it.
    #[test]
    fn mutated_zone_files_never_panic() {
        let base = include_str!("../../dns/tests/data/example.test.zone");
        let alphabet = b" \t\n;()\"\\@$.*0123456789abcdefLOCINTXTSOAM#";
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n.max(1) as u64) as usize
        };
        for _ in 0..5000 {
            let mut text: Vec<u8> = base.as_bytes().to_vec();
            for _ in 0..1 + next(6) {
                let at = next(text.len() + 1);
                match next(3) {
                    0 if at < text.len() => {
                        text.remove(at);
                    }
                    1 => text.insert(at.min(text.len()), alphabet[next(alphabet.len())]),
                    _ if at < text.len() => text[at] = alphabet[next(alphabet.len())],
                    _ => {}
                }
            }
            let Ok(text) = String::from_utf8(text) else {
                continue;
            };
            let mut out = Scanned::default();
            let _ = scan(
                &text,
                "example.test.",
                300,
                "t.zone",
                |line, column, message| ZoneFileError {
                    file: None,
                    line,
                    column,
                    message,
                },
                &mut out,
            );
        }
    }

    #[test]
    fn loc_data_becomes_its_wire_form() {
        // RFC 1876 §3's example: 42 21 54 N 71 06 18 W -24m 30m.
        let g = loc_generic("42 21 54 N 71 06 18 W -24m 30m").unwrap();
        assert_eq!(g, "\\# 16 0033161389172dd070be15f000988d20");
        assert!(loc_generic("91 0 0 N 0 E 0m").is_none());
        assert!(loc_generic("1 2 3 X 4 E 0m").is_none());
        assert!(loc_generic("").is_none());
        let r = record(
            "x",
            60,
            "LOC",
            "52 22 23.000 N 4 53 32.000 E -2.00m",
            "example.",
        )
        .unwrap();
        assert_eq!(r.wire.rtype, 29);
        assert_eq!(r.wire.rdata.len(), 16);
        assert_eq!(
            loc_line("x IN LOC 52 22 23 N 4 53 32 E 10m ; here\n").as_deref(),
            Some("x IN TYPE29 \\# 16 001216138b3cf018810cbce000989a68 ; here\n")
        );
        assert_eq!(loc_line("x IN TXT \"LOC\"\n"), None);
        // An owner spelled like the type is an owner.
        assert_eq!(
            loc_line("loc LOC 52 22 23 N 4 53 32 E 10m\n").as_deref(),
            Some("loc TYPE29 \\# 16 001216138b3cf018810cbce000989a68\n")
        );
        assert_eq!(loc_line("LOC\n"), None);
        assert_eq!(loc_line(" LOC\n"), None);
    }

    #[test]
    fn record_values_in_presentation_form() {
        let r = record("www", 300, "MX", "10 mail", "example.").unwrap();
        assert_eq!(r.name, "www.example.");
        assert_eq!(r.rtype, "MX");
        assert_eq!(r.value, "10 mail.example.");
        assert_eq!(r.wire.rtype, 15);
        assert_eq!(r.wire.rdata, b"\x00\x0a\x04mail\x07example\x00");
        let r = record("@", 60, "TYPE65280", "\\# 3 abcdef", "example.").unwrap();
        assert_eq!(r.wire.rtype, 65280);
        assert_eq!(r.wire.rdata, [0xab, 0xcd, 0xef]);
        assert!(record("www", 60, "A", "10.0.0", "example.").is_err());
        assert!(record("www", 60, "A", "10.0.0.1\nevil 60 IN A 1.2.3.4", "example.").is_err());
    }
}
