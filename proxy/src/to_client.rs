//! A failed write of edge's own to the client is the client's failure: a
//! reset, a client that stopped reading (`send_timeout`). pingora marks the
//! errors of the writes it makes for a proxied response `Downstream`
//! (`into_down`) but not those of `Session::write_response_*` called by
//! edge (RAM hits, slices, edge's own answers), which stay `Unset`; the
//! access log and its 499 read the source, so every path marks it the same
//! way ([`ToClient::to_client`]). Errors pingora itself leaves unset on
//! the client's side (a client gone while a cache miss fills: its
//! `ConnectionClosed` is kept aside so the fill goes on) are read as the
//! client's where the log reads them ([`clients`], [`describe`]).

use pingora_error::{Error, ErrorSource, ErrorType, Result};

/// Marks a write's I/O failure as the client's (`ErrorSource::Downstream`).
pub(crate) trait ToClient {
    /// The result, its error the client's when it is an I/O failure (the
    /// connection closed, a read or write failed or timed out). Anything
    /// else the same calls return (a body cut short of its length, a head
    /// h2 refuses, a head written twice) is edge's and left as it is.
    fn to_client(self) -> Self;
}

impl<T> ToClient for Result<T> {
    fn to_client(self) -> Self {
        self.map_err(|e| {
            if matches!(
                e.etype(),
                ErrorType::ConnectionClosed
                    | ErrorType::ReadError
                    | ErrorType::ReadTimedout
                    | ErrorType::WriteError
                    | ErrorType::WriteTimedout
            ) {
                e.into_down()
            } else {
                e
            }
        })
    }
}

/// Whether `e` is the client's failure: marked so, or a closed connection
/// or a failed or timed-out write whose source nobody set. Every upstream
/// failure is marked `Upstream` where pingora or edge meets it (`into_up`);
/// an unmarked read error is not read as the client's (the cache's own
/// body reads fail as `ReadError`, `cache/src/hit.rs`).
pub(crate) fn clients(e: &Error) -> bool {
    match e.esource() {
        ErrorSource::Downstream => true,
        ErrorSource::Unset => matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::WriteError | ErrorType::WriteTimedout
        ),
        _ => false,
    }
}

/// `e` as the access log and spans show it: pingora's text, with the
/// client named as the source where [`clients`] reads it so but the
/// source is unset (pingora's text then starts with a bare space).
pub(crate) fn describe(e: &Error) -> String {
    if clients(e) {
        describe_as_clients(e)
    } else {
        e.to_string()
    }
}

/// `e`, known to be the client's failure (pingora set it aside as the
/// downstream's while a miss fills: a reset's `ReadError` too), as the
/// log shows it: named the client's when its source is unset.
pub(crate) fn describe_as_clients(e: &Error) -> String {
    if *e.esource() == ErrorSource::Unset {
        format!("{}{e}", ErrorSource::Downstream.as_str())
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writes_error_becomes_the_clients_and_keeps_its_text() {
        let e: Result<()> = Err(Error::because(
            ErrorType::WriteError,
            "while writing body",
            std::io::Error::from(std::io::ErrorKind::BrokenPipe),
        ));
        let e = e.to_client().unwrap_err();
        assert_eq!(*e.esource(), ErrorSource::Downstream);
        assert_eq!(*e.etype(), ErrorType::WriteError);
        assert_eq!(
            e.to_string(),
            "Downstream WriteError context: while writing body cause: broken pipe"
        );
        // Not an I/O failure: edge's, left as it was.
        let short: Result<()> = Err(Error::explain(
            ErrorType::new("PrematureBodyEnd"),
            "body ended before its length",
        ));
        let short = short.to_client().unwrap_err();
        assert_eq!(*short.esource(), ErrorSource::Unset);
        assert!(!clients(&short));
        let ok: Result<u8> = Ok(7);
        assert_eq!(ok.to_client().unwrap(), 7);
    }

    #[test]
    fn an_unset_io_failure_is_the_clients_and_nothing_else_is() {
        let closed = Error::explain(
            ErrorType::ConnectionClosed,
            "Prematurely before response header is sent",
        );
        assert!(clients(&closed));
        assert_eq!(
            describe(&closed),
            "Downstream ConnectionClosed context: Prematurely before response header is sent"
        );
        for etype in [ErrorType::WriteError, ErrorType::WriteTimedout] {
            assert!(clients(&Error::new(etype.clone())), "{etype:?}");
        }
        // A cached body's read failing is edge's, not the client's.
        let read = Error::explain(ErrorType::ReadError, "reading a cached body");
        assert!(!clients(&read));
        assert_eq!(describe(&read), read.to_string());
        // Unless it is known to be the client's (a reset client's read).
        assert_eq!(
            describe_as_clients(&read),
            "Downstream ReadError context: reading a cached body"
        );
        // Marked by whoever met it: as marked.
        let up = Error::explain(ErrorType::ConnectionClosed, "x").into_up();
        assert!(!clients(&up));
        assert_eq!(describe(&up), "Upstream ConnectionClosed context: x");
        assert_eq!(describe_as_clients(&up), up.to_string());
        let down = Error::explain(ErrorType::HTTPStatus(502), "y").into_down();
        assert!(clients(&down));
        assert_eq!(describe(&down), down.to_string());
        // Not an I/O failure: not the client's.
        let internal = Error::explain(ErrorType::InternalError, "z");
        assert!(!clients(&internal));
        assert_eq!(describe(&internal), internal.to_string());
        let connect = Error::new(ErrorType::ConnectRefused);
        assert!(!clients(&connect));
    }
}
