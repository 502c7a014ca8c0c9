//! The gate step: a video route's players' data, country rule and signed
//! URL ([`crate::video::gate`]).

use super::*;

impl EdgeProxy {
    /// A video route's country rule and signed-URL check, and the players'
    /// data ([`crate::video::gate`]). True when edge answered.
    pub(super) async fn gate(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        state: &ProxyState,
        route: &CompiledRoute,
    ) -> Result<bool> {
        let client = client_ip(session);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let gate = crate::video::gate::check(
            route,
            state,
            &self.proxy.metrics.video,
            &self.proxy.qoe,
            session.req_header_mut(),
            client,
            ctx.from_peer,
            now,
        );
        ctx.cmcd = gate.cmcd;
        ctx.cmcd_query = gate.cmcd_query;
        match gate.verdict {
            crate::video::gate::Verdict::Pass => Ok(false),
            crate::video::gate::Verdict::Refuse { status, body, log } => {
                ctx.denied = Some(log);
                ctx.close_unread(session);
                respond(
                    session,
                    status,
                    "text/plain; charset=utf-8",
                    body,
                    &[],
                    ctx.decor(),
                )
                .await?;
                Ok(true)
            }
        }
    }
}
