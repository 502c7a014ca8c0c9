//! Bearer-token check for mutating admin calls.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::runtime::Runtime;

/// Compares in time that depends only on the lengths, not on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn require_token(State(rt): State<Arc<Runtime>>, req: Request, next: Next) -> Response {
    let Some(token) = rt.admin_token() else {
        return (
            StatusCode::FORBIDDEN,
            "mutating admin calls are disabled: set admin.token or admin.token_env\n",
        )
            .into_response();
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(p) if same(p.as_bytes(), token.expose().as_bytes()) => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"edge-admin\"")],
            "a valid admin token is required (Authorization: Bearer <token>)\n",
        )
            .into_response(),
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
}
