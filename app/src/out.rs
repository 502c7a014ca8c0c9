//! Lines for the operator on stdout and stderr. A closed or broken pipe
//! (an operator's `| head`, a supervisor that went away) loses the line and
//! nothing else: writing never panics, as `println!` would.

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Logs are JSON: stdout then carries only JSON objects too.
static JSON: AtomicBool = AtomicBool::new(false);

/// Makes stdout's event lines JSON (with `log_format = "json"`).
pub fn use_json(on: bool) {
    JSON.store(on, Ordering::Release);
}

/// A bound socket: `listening <kind> <name> <address>`, or
/// `{"event":"listening","kind":…,"name":…,"address":…}` in JSON mode.
pub fn listening(kind: &str, name: &str, addr: SocketAddr) {
    if JSON.load(Ordering::Acquire) {
        let v = serde_json::json!({"event": "listening", "kind": kind, "name": name, "address": addr.to_string()});
        say_line(format_args!("{v}"));
    } else {
        say_line(format_args!("listening {kind} {name} {addr}"));
    }
}

/// The node serves: `ready`, or `{"event":"ready"}` in JSON mode.
pub fn ready() {
    if JSON.load(Ordering::Acquire) {
        say_line(format_args!("{}", serde_json::json!({"event": "ready"})));
    } else {
        say_line(format_args!("ready"));
    }
}

/// `say!("…", args)`: [`say_line`] with `format!` arguments.
macro_rules! say {
    ($($t:tt)*) => { $crate::out::say_line(format_args!($($t)*)) };
}
pub(crate) use say;

/// `complain!("…", args)`: [`complain_line`] with `format!` arguments.
macro_rules! complain {
    ($($t:tt)*) => { $crate::out::complain_line(format_args!($($t)*)) };
}
pub(crate) use complain;

/// One line on stdout (bound sockets, `ready`, `edge check` results).
pub fn say_line(line: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// One line on stderr (errors before logging is set up).
pub fn complain_line(line: fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_are_written() {
        super::say!("out test");
        super::complain!("err test");
    }
}
