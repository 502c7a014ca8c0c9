//! Bearer-token check for mutating admin calls.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::runtime::Runtime;

/// Compares in time that depends only on the lengths, not on where they
/// differ (`subtle`).
fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// The credentials of `Authorization: Bearer <token>`; the scheme is
/// case-insensitive (RFC 9110 §11.1), the token as given.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether `req` carries the admin token.
pub fn authorized(rt: &Runtime, headers: &axum::http::HeaderMap) -> bool {
    let Some(token) = rt.admin_token() else {
        return false;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .is_some_and(|p| same(p.as_bytes(), token.expose().as_bytes()))
}

/// The 401 a call without the token gets.
pub fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"edge-admin\"")],
        "a valid admin token is required (Authorization: Bearer <token>)\n",
    )
        .into_response()
}

/// The proof a call carries the admin token: mutating handlers take it
/// as their first argument, so the check runs before anything else is
/// read. Refused with 403 when no token is configured (mutations are off),
/// 401 when the call lacks it.
pub struct Authorized;

impl FromRequestParts<Arc<Runtime>> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, rt: &Arc<Runtime>) -> Result<Self, Response> {
        if rt.admin_token().is_none() {
            return Err((
                StatusCode::FORBIDDEN,
                "mutating admin calls are disabled: set admin.token or admin.token_env\n",
            )
                .into_response());
        }
        if authorized(rt, &parts.headers) {
            Ok(Authorized)
        } else {
            Err(unauthorized())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn comparison() {
        assert!(super::same(b"abc", b"abc"));
        assert!(!super::same(b"abc", b"abd"));
        assert!(!super::same(b"abc", b"abcd"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        use super::bearer;
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }
}
