//! Edge's own answers: a route's direct response or redirect, and the
//! refusals and errors of the other steps (`respond`).

use super::*;
use crate::to_client::ToClient;

impl EdgeProxy {
    /// A `respond` or `redirect` route's answer.
    pub(super) async fn answer(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        route: &CompiledRoute,
    ) -> Result<()> {
        let decor = Decor {
            ops: Some(&route.response_headers),
            rate_limit: ctx.rate_limit.as_ref(),
        };
        match &route.action {
            Action::Respond {
                status,
                body,
                content_type,
            } => respond(session, *status, content_type, body.clone(), &[], decor).await,
            Action::Redirect { to, scheme, status } => {
                let location = redirect_location(
                    to.as_deref(),
                    scheme.as_deref(),
                    self.tls,
                    session.req_header(),
                );
                let body = Bytes::from(format!("redirecting to {location}\n"));
                let location = [("location", location)];
                respond(
                    session,
                    *status,
                    "text/plain; charset=utf-8",
                    body,
                    &location,
                    decor,
                )
                .await
            }
            Action::Steer { mode } => self.steer(session, ctx, *mode, decor).await,
            Action::Proxy { .. } => Ok(()),
        }
    }
}

/// Writes a complete response from edge itself.
pub(super) async fn respond(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
    extra: &[(&'static str, String)],
    decor: Decor<'_>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, content_type)?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    for (name, value) in extra {
        resp.insert_header(*name, value.as_str())?;
    }
    decor.apply(&mut resp)?;
    let head_only = session.req_header().method == http::Method::HEAD || body.is_empty();
    session
        .write_response_header(Box::new(resp), head_only)
        .await
        .to_client()?;
    if !head_only {
        session
            .write_response_body(Some(body), true)
            .await
            .to_client()?;
    }
    Ok(())
}

/// Fills a redirect target template.
pub(super) fn redirect_location(
    to: Option<&str>,
    scheme: Option<&str>,
    tls: bool,
    req: &RequestHeader,
) -> String {
    let current_scheme = if tls { "https" } else { "http" };
    let scheme = scheme.unwrap_or(current_scheme);
    let raw_host = req
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let path = req.uri.path();
    let query = req.uri.query().unwrap_or("");
    let path_and_query = req
        .uri
        .path_and_query()
        .map_or_else(|| path.to_string(), |pq| pq.as_str().to_string());
    match to {
        Some(template) => template
            .replace("{scheme}", scheme)
            .replace("{host}", &raw_host)
            .replace("{path_and_query}", &path_and_query)
            .replace("{path}", path)
            .replace("{query}", query),
        // Only the scheme changes; the default port goes with it.
        None => format!("{scheme}://{}{path_and_query}", strip_port(&raw_host)),
    }
}
