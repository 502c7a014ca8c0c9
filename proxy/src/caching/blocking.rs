//! LL-HLS blocking playlist reloads (RFC 8216bis §6.2.5.2): a request for a
//! playlist with `_HLS_msn` (and `_HLS_part`) waits until the playlist
//! holds that segment or part. The origin holds it; the edge forwards one
//! request per distinct directive set (the directives are part of the
//! cache key, and concurrent misses share one fetch), and holds each client
//! at most `[cache.video] blocking_hold` (default three part targets of that
//! playlist): past it the client gets the current playlist, as a server
//! that cannot block would answer, never an error. The held fetch goes on
//! in the background, so the clients that came with it, and the cache, get
//! its answer.

use std::time::Duration;

use http::header;
use pingora_error::Result;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use super::slice::Fetch;
use super::{CacheCtx, CacheRuntime, SubTask};
use crate::decorate::Decor;
use crate::to_client::ToClient;

/// The hold when nothing says otherwise: three part targets of 1 s.
const DEFAULT_HOLD: Duration = Duration::from_secs(3);
/// How long a held fetch a client gave up on may still run.
const DETACHED: Duration = Duration::from_secs(30);

/// Whether `req` is a blocking playlist reload.
pub(crate) fn is_blocking(req: &RequestHeader) -> bool {
    let path = req.uri.path();
    (path.ends_with(".m3u8") || path.ends_with(".m3u"))
        && req
            .uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("_HLS_msn=")))
}

/// Whether a playlist request's delivery directives are well formed (RFC
/// 8216bis §6.2.5): `_HLS_msn` and `_HLS_part` decimal integers given at
/// most once, `_HLS_part` only with `_HLS_msn`, `_HLS_skip` `YES` or `v2`.
/// A server answers a malformed one with 400; each distinct value would
/// otherwise be an object of its own, fetched and held.
pub(crate) fn check_directives(req: &RequestHeader) -> Result<(), &'static str> {
    let path = req.uri.path();
    if !(path.ends_with(".m3u8") || path.ends_with(".m3u")) {
        return Ok(());
    }
    let Some(query) = req.uri.query() else {
        return Ok(());
    };
    let (mut msn, mut part, mut skip) = (0, 0, 0);
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let number = !v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit());
        match k {
            "_HLS_msn" if !number => return Err("_HLS_msn is not a decimal integer"),
            "_HLS_part" if !number => return Err("_HLS_part is not a decimal integer"),
            "_HLS_skip" if v != "YES" && v != "v2" => return Err("_HLS_skip is not YES or v2"),
            "_HLS_msn" => msn += 1,
            "_HLS_part" => part += 1,
            "_HLS_skip" => skip += 1,
            _ => {}
        }
    }
    if msn > 1 || part > 1 || skip > 1 {
        return Err("a delivery directive is given twice");
    }
    if part == 1 && msn == 0 {
        return Err("_HLS_part without _HLS_msn");
    }
    Ok(())
}

/// How long a client of the playlist at `authority` + `path` is held.
pub(crate) fn hold(
    rt: &CacheRuntime,
    authority: &str,
    path: &str,
    configured: Option<Duration>,
) -> Duration {
    configured.unwrap_or_else(|| {
        rt.storage
            .successors()
            .low_latency(authority, path)
            .and_then(|ll| ll.part_target)
            .map_or(DEFAULT_HOLD, |t| t.saturating_mul(3))
    })
}

/// The playlist's target without the blocking directives (`_HLS_skip`, a
/// delta update, stays: it is still answerable at once).
fn current_target(req: &RequestHeader) -> String {
    let path = req.uri.path();
    let query = req.uri.query().unwrap_or_default();
    let (rest, _) = crate::video::strip_params(query, &["_HLS_msn", "_HLS_part"]);
    crate::video::with_query(path, rest.as_deref())
}

/// Answers a blocking reload: the held playlist, or the current one once
/// `hold` has passed.
pub(crate) async fn serve(
    session: &mut Session,
    cache: &mut CacheCtx,
    hold: Duration,
    decor: Decor<'_>,
) -> Result<()> {
    let mut held = Fetch::spawn(
        session,
        SubTask::Fetch {
            path_and_query: None,
        },
        0,
    )?;
    let answered = matches!(tokio::time::timeout(hold, held.header()).await, Ok(Ok(_)));
    let mut fetch = if answered {
        held
    } else {
        // Finished in the background: its fill is what the clients that
        // came with this one, and the next ones, are waiting for.
        tokio::spawn(async move {
            let _ = tokio::time::timeout(DETACHED, async {
                while let Ok(Some(_)) = held.chunk().await {}
            })
            .await;
        });
        cache.fwd = Some("blocking-hold");
        let target = current_target(session.req_header());
        let mut f = Fetch::spawn(
            session,
            SubTask::Fetch {
                path_and_query: Some(target),
            },
            0,
        )?;
        f.header().await?;
        f
    };
    let mut resp = fetch.header().await?.clone();
    let (status, tier) = fetch.status();
    cache.status = Some(status);
    cache.tier = tier;
    // Framing is the downstream session's own.
    resp.remove_header(&header::TRANSFER_ENCODING);
    decor.apply(&mut resp)?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await
        .to_client()?;
    if head_only {
        return Ok(());
    }
    while let Some(chunk) = fetch.chunk().await? {
        session
            .write_response_body(Some(chunk), false)
            .await
            .to_client()?;
    }
    session.write_response_body(None, true).await.to_client()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str) -> RequestHeader {
        RequestHeader::build("GET", target.as_bytes(), None).unwrap()
    }

    #[test]
    fn only_playlists_with_a_sequence_number_block() {
        assert!(is_blocking(&req("/ll/c/index.m3u8?_HLS_msn=5")));
        assert!(is_blocking(&req(
            "/ll/c/index.m3u8?a=1&_HLS_msn=5&_HLS_part=2"
        )));
        assert!(!is_blocking(&req("/ll/c/index.m3u8?_HLS_part=2")));
        assert!(!is_blocking(&req("/ll/c/index.m3u8?_HLS_skip=YES")));
        assert!(!is_blocking(&req("/ll/c/seg_5.ts?_HLS_msn=5")));
        assert!(!is_blocking(&req("/ll/c/index.m3u8?x_HLS_msn=5")));
    }

    #[test]
    fn malformed_directives_are_refused() {
        for ok in [
            "/p.m3u8",
            "/p.m3u8?_HLS_msn=5",
            "/p.m3u8?_HLS_msn=5&_HLS_part=0&_HLS_skip=YES",
            "/p.m3u8?_HLS_skip=v2&t=1",
            "/seg.ts?_HLS_msn=x",
        ] {
            assert_eq!(check_directives(&req(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "/p.m3u8?_HLS_msn=",
            "/p.m3u8?_HLS_msn=-1",
            "/p.m3u8?_HLS_msn=1e3",
            "/p.m3u8?_HLS_msn=99999999999999999999",
            "/p.m3u8?_HLS_msn=5&_HLS_msn=6",
            "/p.m3u8?_HLS_part=1",
            "/p.m3u8?_HLS_msn=5&_HLS_part=x",
            "/p.m3u8?_HLS_skip=NO",
            "/p.m3u8?_HLS_skip",
        ] {
            assert!(check_directives(&req(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_current_playlist_keeps_everything_but_the_wait() {
        assert_eq!(
            current_target(&req(
                "/p/index.m3u8?_HLS_msn=5&_HLS_part=2&_HLS_skip=YES&t=1"
            )),
            "/p/index.m3u8?_HLS_skip=YES&t=1"
        );
        assert_eq!(
            current_target(&req("/p/index.m3u8?_HLS_msn=5")),
            "/p/index.m3u8"
        );
    }
}
