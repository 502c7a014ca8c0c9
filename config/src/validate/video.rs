//! What a video route adds: signed URLs (`auth`), country rules (`geo`) and
//! CTA-5004 client data (`cmcd`).

use toml::Spanned;

use super::Checker;
use crate::model::{AuthScope, Cmcd, GeoRule, RouteGeo, SigningKey, UrlAuth};
use crate::raw::{RawCmcd, RawRouteGeo, RawUrlAuth};
use crate::source::join_key;

/// A query parameter or cookie name: a URL-safe token, not one that
/// means something else to edge (`CMCD`, the HLS delivery directives).
fn param_name(ck: &mut Checker<'_>, v: &Spanned<String>, path: &str) -> Option<String> {
    let s = v.get_ref();
    if s == "CMCD" || s.starts_with("_HLS_") {
        ck.error(
            v.span(),
            path,
            format!("{s:?} is a name players use for something else (CTA-5004, HLS delivery directives)"),
            Some("another name, such as \"token\""),
        );
        return None;
    }
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    if ok {
        Some(s.clone())
    } else {
        ck.error(
            v.span(),
            path,
            format!("{s:?} is not a usable parameter name"),
            Some("1–64 letters, digits, '-', '_', '.' or '~'"),
        );
        None
    }
}

/// An environment variable's name.
fn env_name(ck: &mut Checker<'_>, v: &Spanned<String>, path: &str) -> Option<String> {
    let s = v.get_ref();
    let ok = !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Some(s.clone())
    } else {
        ck.error(
            v.span(),
            path,
            format!("{s:?} is not an environment variable name"),
            Some("letters, digits and '_', not starting with a digit"),
        );
        None
    }
}

/// `auth = { kind = "hmac", secret_env = "…" | keys = [...], param,
/// expires_param, scope, bind, cookies }`.
pub(super) fn url_auth(ck: &mut Checker<'_>, p: &str, raw: Spanned<RawUrlAuth>) -> Option<UrlAuth> {
    let span = raw.span();
    let RawUrlAuth {
        kind,
        secret_env,
        keys,
        param,
        expires_param,
        scope,
        bind,
        cookies,
    } = raw.into_inner();
    let kind_ok = match &kind {
        Some(k) => ck
            .choice(k, &join_key(p, "kind"), &[("hmac", ())])
            .is_some(),
        None => {
            ck.error(
                span.clone(),
                join_key(p, "kind"),
                "`kind` is missing",
                Some("\"hmac\""),
            );
            false
        }
    };
    let mut parsed = Vec::new();
    match (&secret_env, keys.is_empty()) {
        (Some(_), false) => ck.error(
            span.clone(),
            p,
            "`secret_env` and `keys` cannot both be set",
            Some("`secret_env` for one key, or `keys = [{ id, secret_env }, ...]` to rotate"),
        ),
        (None, true) => ck.error(
            span.clone(),
            p,
            "no signing key",
            Some("`secret_env = \"NAME\"` or `keys = [{ id = \"k1\", secret_env = \"NAME\" }]`"),
        ),
        (Some(env), true) => {
            if let Some(env) = env_name(ck, env, &join_key(p, "secret_env")) {
                parsed.push(SigningKey {
                    id: "0".to_string(),
                    secret_env: env,
                });
            }
        }
        (None, false) => {
            for (i, k) in keys.iter().enumerate() {
                let kp = format!("{p}.keys[{i}]");
                let k = k.get_ref();
                let id = k.id.get_ref();
                let id_ok = !id.is_empty()
                    && id.len() <= 32
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
                if !id_ok {
                    ck.error(
                        k.id.span(),
                        join_key(&kp, "id"),
                        format!("{id:?} is not a key id"),
                        Some("1–32 letters, digits, '-' or '_'"),
                    );
                    continue;
                }
                if parsed.iter().any(|s: &SigningKey| &s.id == id) {
                    ck.error(
                        k.id.span(),
                        join_key(&kp, "id"),
                        format!("key id {id:?} is listed twice"),
                        None,
                    );
                    continue;
                }
                if let Some(env) = env_name(ck, &k.secret_env, &join_key(&kp, "secret_env")) {
                    parsed.push(SigningKey {
                        id: id.clone(),
                        secret_env: env,
                    });
                }
            }
        }
    }
    let param_or = |ck: &mut Checker<'_>, v: &Option<Spanned<String>>, key: &str, d: &str| match v {
        Some(v) => param_name(ck, v, &join_key(p, key)),
        None => Some(d.to_string()),
    };
    let param = param_or(ck, &param, "param", "token");
    let expires_param = param_or(ck, &expires_param, "expires_param", "exp");
    if let (Some(a), Some(b)) = (&param, &expires_param) {
        if a == b {
            ck.error(
                span.clone(),
                join_key(p, "expires_param"),
                format!("`param` and `expires_param` are both {a:?}"),
                Some("two different names"),
            );
        }
    }
    let scope = match &scope {
        Some(s) => ck.choice(
            s,
            &join_key(p, "scope"),
            &[
                ("path", AuthScope::Path),
                ("path-prefix", AuthScope::PathPrefix),
                ("manifest-dir", AuthScope::ManifestDir),
            ],
        ),
        None => Some(AuthScope::Path),
    };
    let mut bind_client_ip = false;
    for (i, b) in bind.iter().enumerate() {
        if ck
            .choice(b, &format!("{p}.bind[{i}]"), &[("client_ip", ())])
            .is_some()
        {
            bind_client_ip = true;
        }
    }
    if !kind_ok || parsed.is_empty() {
        return None;
    }
    Some(UrlAuth {
        keys: parsed,
        param: param?,
        expires_param: expires_param?,
        scope: scope?,
        bind_client_ip,
        cookies: cookies.unwrap_or(true),
    })
}

/// `geo = { allow = [...] | deny = [...], unknown = "allow" | "deny", body }`.
pub(super) fn route_geo(
    ck: &mut Checker<'_>,
    p: &str,
    raw: Spanned<RawRouteGeo>,
) -> Option<RouteGeo> {
    let span = raw.span();
    let RawRouteGeo {
        allow,
        deny,
        unknown,
        body,
    } = raw.into_inner();
    let countries = |ck: &mut Checker<'_>, key: &str, list: Vec<Spanned<String>>| {
        let mut out = Vec::new();
        for (i, c) in list.iter().enumerate() {
            let v = c.get_ref();
            if v.len() == 2 && v.bytes().all(|b| b.is_ascii_alphabetic()) {
                out.push(v.to_ascii_uppercase());
            } else {
                ck.error(
                    c.span(),
                    format!("{p}.{key}[{i}]"),
                    format!("{v:?} is not a country code"),
                    Some("an ISO 3166-1 alpha-2 code such as \"DE\""),
                );
            }
        }
        out
    };
    let rule = match (allow, deny) {
        (Some(a), None) if a.is_empty() => {
            ck.error(
                span,
                format!("{p}.allow"),
                "an empty allow list refuses every client",
                Some("the countries served, such as [\"DE\"]; or no `geo` at all"),
            );
            return None;
        }
        (Some(a), None) => GeoRule::Allow(countries(ck, "allow", a)),
        (None, Some(d)) => GeoRule::Deny(countries(ck, "deny", d)),
        (Some(_), Some(_)) => {
            ck.error(
                span,
                p,
                "`allow` and `deny` cannot both be set",
                Some("one list: the countries served, or the countries refused"),
            );
            return None;
        }
        (None, None) => {
            ck.error(
                span,
                p,
                "no country list",
                Some("`allow = [\"DE\", ...]` or `deny = [...]`"),
            );
            return None;
        }
    };
    let unknown_allowed = match &unknown {
        Some(u) => ck.choice(
            u,
            &join_key(p, "unknown"),
            &[("allow", true), ("deny", false)],
        )?,
        // An allow list admits only the listed; a deny list refuses only them.
        None => matches!(rule, GeoRule::Deny(_)),
    };
    Some(RouteGeo {
        rule,
        unknown_allowed,
        body: body.unwrap_or_else(|| "unavailable for legal reasons\n".to_string()),
    })
}

/// `cmcd = { forward = true | false }`.
pub(super) fn cmcd(raw: RawCmcd) -> Cmcd {
    Cmcd {
        forward: raw.forward.unwrap_or(false),
    }
}
