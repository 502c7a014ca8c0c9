//! `[cache]`.

use std::path::Path;

use toml::de::DeValue;
use toml::Spanned;

use super::Checker;
use crate::model::{Cache, DiskTier, StatusRange, TtlMatch, TtlRule, VideoPolicy};
use crate::raw::{RawCache, RawTtlRule, RawVideo};
use crate::source::join_key;

pub(super) fn cache(ck: &mut Checker<'_>, value: Option<&Spanned<DeValue<'_>>>) -> Cache {
    let d = Cache::default();
    let Some(value) = value else { return d };
    let Some(raw) = ck.deser::<RawCache>(value) else {
        return d;
    };
    let RawCache {
        ram_size,
        ram_max_object,
        disk_path,
        disk_size,
        disk_max_object,
        slice_size,
        slice_threshold,
        lock_timeout,
        default_ttl,
        video,
        ttl_rule,
        targeted_fields,
        forward_targeted_fields,
        status_name,
    } = raw;
    let p = "cache";
    let ram = ck.size(&ram_size, p, "ram_size", d.ram_size);
    let ram_max = ck.size(
        &ram_max_object,
        p,
        "ram_max_object",
        d.ram_max_object.min(ram),
    );

    let disk = match disk_path {
        Some(path) => {
            let resolved = ck.resolve(path.get_ref());
            if let Err(why) = writable_dir(&resolved) {
                ck.error(
                    path.span(),
                    join_key(p, "disk_path"),
                    format!(
                        "cache directory {} cannot be written: {why}",
                        resolved.display()
                    ),
                    Some("a directory edge may write (it is created if its parent exists)"),
                );
            }
            let size = match &disk_size {
                Some(s) => ck.size_value(s, &join_key(p, "disk_size")).unwrap_or(0),
                None => {
                    ck.error(
                        path.span(),
                        join_key(p, "disk_size"),
                        "a disk tier needs a `disk_size`",
                        Some("a size such as \"10 GiB\""),
                    );
                    0
                }
            };
            let max_object = ck.size(&disk_max_object, p, "disk_max_object", size.min(4 << 30));
            Some(DiskTier {
                path: resolved,
                size,
                max_object,
            })
        }
        None => {
            ck.not_here(&disk_size, p, "disk_size", "needs a `disk_path`");
            ck.not_here(
                &disk_max_object,
                p,
                "disk_max_object",
                "needs a `disk_path`",
            );
            None
        }
    };

    let slice = ck.size(&slice_size, p, "slice_size", d.slice_size);
    if !(1 << 20..=4 << 20).contains(&slice) {
        let span = ck.span_or(&slice_size, &value.span());
        ck.error(
            span,
            join_key(p, "slice_size"),
            format!("{slice} bytes is outside the slice sizes edge supports"),
            Some("a size from 1 MiB to 4 MiB"),
        );
    }
    let threshold = ck.size(
        &slice_threshold,
        p,
        "slice_threshold",
        d.slice_threshold.max(slice),
    );

    let mut rules = Vec::new();
    for (i, r) in ttl_rule.into_iter().enumerate() {
        if let Some(rule) = ttl_rule_item(ck, &format!("{p}.ttl_rule[{i}]"), r) {
            rules.push(rule);
        }
    }

    Cache {
        ram_size: ram,
        ram_max_object: ram_max,
        disk,
        slice_size: slice,
        slice_threshold: threshold,
        lock_timeout: ck.positive_duration(&lock_timeout, p, "lock_timeout", d.lock_timeout),
        default_ttl: ck.duration(&default_ttl, p, "default_ttl", d.default_ttl),
        video: video
            .map(|v| video_policy(ck, &join_key(p, "video"), v.into_inner()))
            .unwrap_or_default(),
        ttl_rules: rules,
        targeted_fields: match targeted_fields {
            Some(list) => header_names(ck, &join_key(p, "targeted_fields"), list),
            None => d.targeted_fields,
        },
        forward_targeted_fields: forward_targeted_fields.unwrap_or(d.forward_targeted_fields),
        status_name: match status_name {
            Some(name) if cache_status_token(name.get_ref()) => name.into_inner(),
            Some(name) => {
                ck.error(
                    name.span(),
                    join_key(p, "status_name"),
                    format!("{:?} is not a token", name.get_ref()),
                    Some("letters, digits and !#$%&'*+-.^_`|~ (RFC 9110 §5.6.2)"),
                );
                d.status_name
            }
            None => d.status_name,
        },
    }
}

/// Lower-case header names; each one that is not a field name is an error.
pub(super) fn header_names(
    ck: &mut Checker<'_>,
    p: &str,
    list: Vec<Spanned<String>>,
) -> Vec<String> {
    let mut names = Vec::new();
    for (i, h) in list.into_iter().enumerate() {
        if super::routes::header_name_ok(h.get_ref()) {
            names.push(h.into_inner().to_ascii_lowercase());
        } else {
            ck.error(
                h.span(),
                format!("{p}[{i}]"),
                format!("{:?} is not a header name", h.get_ref()),
                Some("a header name"),
            );
        }
    }
    names
}

fn cache_status_token(s: &str) -> bool {
    super::routes::header_name_ok(s)
}

fn video_policy(ck: &mut Checker<'_>, p: &str, raw: RawVideo) -> VideoPolicy {
    let d = VideoPolicy::default();
    let RawVideo {
        vod_playlist_ttl,
        segment_ttl,
        live_playlist_max_ttl,
        prefetch,
        prefetch_concurrency,
        blocking_hold,
    } = raw;
    VideoPolicy {
        vod_playlist_ttl: ck.duration(&vod_playlist_ttl, p, "vod_playlist_ttl", d.vod_playlist_ttl),
        segment_ttl: ck.duration(&segment_ttl, p, "segment_ttl", d.segment_ttl),
        live_playlist_max_ttl: ck.duration(
            &live_playlist_max_ttl,
            p,
            "live_playlist_max_ttl",
            d.live_playlist_max_ttl,
        ),
        prefetch: ck.int(&prefetch, p, "prefetch", 0, 32, d.prefetch as i64) as u32,
        prefetch_concurrency: ck.int(
            &prefetch_concurrency,
            p,
            "prefetch_concurrency",
            1,
            1024,
            d.prefetch_concurrency as i64,
        ) as u32,
        blocking_hold: blocking_hold
            .and_then(|h| ck.duration_value(&h, &format!("{p}.blocking_hold"))),
    }
}

fn ttl_rule_item(ck: &mut Checker<'_>, p: &str, raw: Spanned<RawTtlRule>) -> Option<TtlRule> {
    let RawTtlRule {
        path_suffix,
        path_regex,
        status,
        ttl,
    } = raw.into_inner();
    let matcher = match (path_suffix, path_regex) {
        (Some(_), Some(r)) => {
            ck.error(
                r.span(),
                join_key(p, "path_regex"),
                "`path_suffix` and `path_regex` cannot both be set",
                None,
            );
            return None;
        }
        (Some(s), None) => TtlMatch::Suffix(s.into_inner()),
        (None, Some(r)) => TtlMatch::Regex(ck.regex(&r, &join_key(p, "path_regex"))?),
        (None, None) => TtlMatch::Any,
    };
    let mut statuses = Vec::new();
    for (i, s) in status.unwrap_or_default().iter().enumerate() {
        if let Some(n) = ck.int_value(s, &format!("{p}.status[{i}]"), 100, 599) {
            statuses.push(StatusRange {
                min: n as u16,
                max: n as u16,
            });
        }
    }
    Some(TtlRule {
        matcher,
        statuses,
        ttl: ck.duration_value(&ttl, &join_key(p, "ttl"))?,
    })
}

/// Whether edge could write cache files under `dir` (creating it if needed).
/// Checks without leaving anything behind.
pub(crate) fn writable_dir(dir: &Path) -> Result<(), String> {
    let mut probe = dir;
    // Find the nearest existing ancestor: the directory will be created under it.
    while !probe.exists() {
        match probe.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => probe = parent,
            _ => return Err("no existing parent directory".into()),
        }
    }
    if !probe.is_dir() {
        return Err(format!("{} is not a directory", probe.display()));
    }
    // Unique per call: validations may run at once in one process.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let test = probe.join(format!(".edge-write-test-{}-{n}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&test)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&test);
            Ok(())
        }
        Err(e) => Err(format!("{}: {e}", probe.display())),
    }
}
