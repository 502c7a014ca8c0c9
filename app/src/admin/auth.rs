//! Bearer-token check for mutating admin calls.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
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

pub async fn require_token(State(rt): State<Arc<Runtime>>, req: Request, next: Next) -> Response {
    let Some(token) = rt.admin_token() else {
        return (
            StatusCode::FORBIDDEN,
            "mutating admin calls are disabled: set admin.token or admin.token_env\n",
        )
            .into_response();
    };
    drop(token);
    if authorized(&rt, req.headers()) {
        next.run(req).await
    } else {
        unauthorized()
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
