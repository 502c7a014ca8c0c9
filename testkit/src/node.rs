//! The `edge` binary as a child process. It prints one line per bound socket
//! (`listening <kind> <name> <addr>`) and `ready` on stdout; this reads those
//! to learn the addresses chosen for port 0, as hickory's test harness does.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The config as the test wrote it, or, when `EDGE_TEST_FAST_PATHS=off` is
/// set (`make test`'s second pass over the request-path and cache tests),
/// with `server.fast_paths = false`: the same tests then check the general
/// path that the fast paths must answer like.
pub fn test_switches(config: &str) -> String {
    general_path(
        config,
        std::env::var("EDGE_TEST_FAST_PATHS").as_deref() == Ok("off"),
    )
}

/// `config` with `server.fast_paths = false` when `off`, unless it sets
/// the switch itself (a test of the switch).
fn general_path(config: &str, off: bool) -> String {
    if !off || config.contains("fast_paths") {
        return config.to_string();
    }
    let mut out = String::with_capacity(config.len() + 32);
    let mut done = false;
    for line in config.lines() {
        out.push_str(line);
        out.push('\n');
        if !done && line.trim() == "[server]" {
            out.push_str("fast_paths = false\n");
            done = true;
        }
    }
    if !done {
        out.push_str("\n[server]\nfast_paths = false\n");
    }
    out
}

/// Everything the node printed, and the sockets it announced.
#[derive(Debug, Default)]
pub struct NodeOutput {
    pub lines: Vec<String>,
    pub listeners: HashMap<String, SocketAddr>,
    pub ready: bool,
    pub exited: bool,
}

type Shared = Arc<(Mutex<NodeOutput>, Condvar)>;

/// A running `edge run` process. Killed when dropped.
pub struct EdgeNode {
    child: Child,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    output: Shared,
}

impl EdgeNode {
    /// Writes `config` to a fresh directory and runs `bin run --config` on it,
    /// waiting until the node says `ready`. Panics with its output if it exits first.
    pub fn start(bin: &str, config: &str) -> Self {
        Self::start_with(bin, config, &[], &[])
    }

    /// As [`EdgeNode::start`], with extra arguments and environment.
    pub fn start_with(bin: &str, config: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_customized(bin, config, |cmd| {
            cmd.args(args).envs(env.iter().copied());
        })
    }

    /// As [`EdgeNode::start`], with the command changed by `customize`
    /// first (descriptors to pass, environment).
    pub fn start_customized(bin: &str, config: &str, customize: impl FnOnce(&mut Command)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("edge.toml");
        std::fs::write(&config_path, test_switches(config)).expect("write config");
        let mut cmd = Command::new(bin);
        cmd.arg("run").arg("--config").arg(&config_path);
        customize(&mut cmd);
        cmd.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        // Its own process group: what it starts (an upgrade's new
        // process) goes with it when the test ends.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let node = Self::spawn(cmd, dir, config_path);
        node.wait_ready(Duration::from_secs(60));
        node
    }

    /// Runs any `edge` command line (e.g. `demo`) and collects its output,
    /// without waiting for readiness.
    pub fn spawn_command(bin: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("edge.toml");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Self::spawn(cmd, dir, config_path)
    }

    fn spawn(mut cmd: Command, dir: tempfile::TempDir, config_path: PathBuf) -> Self {
        let mut child = cmd.spawn().expect("spawn edge");
        let output: Shared = Arc::new((Mutex::new(NodeOutput::default()), Condvar::new()));
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        for (stream, is_stdout) in [
            (Box::new(stdout) as Box<dyn std::io::Read + Send>, true),
            (Box::new(stderr), false),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let (lock, cvar) = &*output;
                    let mut o = lock.lock().expect("output lock");
                    if is_stdout {
                        parse_announcement(&line, &mut o);
                    }
                    o.lines.push(line);
                    cvar.notify_all();
                }
                if is_stdout {
                    let (lock, cvar) = &*output;
                    lock.lock().expect("output lock").exited = true;
                    cvar.notify_all();
                }
            });
        }
        EdgeNode {
            child,
            dir,
            config_path,
            output,
        }
    }

    /// Waits for the `ready` line; panics with the output if the node exits or stalls.
    pub fn wait_ready(&self, limit: Duration) {
        self.wait_for(limit, "ready", |o| o.ready);
    }

    /// Waits until `pred` holds over the output.
    pub fn wait_for(&self, limit: Duration, what: &str, pred: impl Fn(&NodeOutput) -> bool) {
        let (lock, cvar) = &*self.output;
        let deadline = Instant::now() + limit;
        let mut o = lock.lock().expect("output lock");
        loop {
            if pred(&o) {
                return;
            }
            let now = Instant::now();
            if now > deadline || o.exited {
                let why = if o.exited {
                    "the node exited"
                } else {
                    "timed out"
                };
                panic!("{why} waiting for {what}; output:\n{}", o.lines.join("\n"));
            }
            o = cvar.wait_timeout(o, deadline - now).expect("output lock").0;
        }
    }

    /// Waits until a line containing `needle` has been printed.
    pub fn wait_for_line(&self, needle: &str, limit: Duration) {
        self.wait_for(limit, needle, |o| {
            o.lines.iter().any(|l| l.contains(needle))
        });
    }

    /// The address a listener (or `admin`) is bound to.
    pub fn addr(&self, name: &str) -> SocketAddr {
        let (lock, _) = &*self.output;
        let o = lock.lock().expect("output lock");
        *o.listeners
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name:?}; output:\n{}", o.lines.join("\n")))
    }

    pub fn url(&self, listener: &str, path: &str) -> String {
        format!("http://{}{path}", self.addr(listener))
    }

    pub fn admin_url(&self, path: &str) -> String {
        self.url("admin", path)
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The directory the config lives in (for certificates and cache files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces the config file (a reload then reads it).
    pub fn write_config(&self, config: &str) {
        std::fs::write(&self.config_path, test_switches(config)).expect("write config");
    }

    pub fn output(&self) -> String {
        let (lock, _) = &*self.output;
        lock.lock().expect("output lock").lines.join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The access log lines of requests for `path` (the path as logged,
    /// without the query), in the order they were written.
    pub fn access_lines(&self, path: &str) -> Vec<String> {
        let needle = format!("path={path} ");
        self.output()
            .lines()
            .filter(|l| l.contains(" access: ") && l.contains(&needle))
            .map(str::to_string)
            .collect()
    }

    /// The next access log line of `path` after its first `seen` ones,
    /// waited for (30 s at most: a panic); it must name `reason`.
    pub async fn access_line(&self, path: &str, seen: usize, reason: &str) -> String {
        let waited = Instant::now();
        let line = loop {
            if let Some(line) = self.access_lines(path).into_iter().nth(seen) {
                break line;
            }
            assert!(
                waited.elapsed() < Duration::from_secs(30),
                "{path}: nothing logged: {}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            line.contains(reason),
            "{path}: not logged as {reason}: {line}"
        );
        line
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal the node");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn parse_announcement(line: &str, o: &mut NodeOutput) {
    // JSON mode (`log_format = "json"`): the same events as objects.
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        match v["event"].as_str() {
            Some("listening") => {
                if let (Some(name), Some(addr)) = (v["name"].as_str(), v["address"].as_str()) {
                    if let Ok(addr) = addr.parse() {
                        o.listeners.insert(name.to_string(), addr);
                    }
                }
            }
            Some("ready") => o.ready = true,
            _ => {}
        }
        return;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["listening", _kind, name, addr] => {
            if let Ok(addr) = addr.parse() {
                o.listeners.insert((*name).to_string(), addr);
            }
        }
        ["ready"] => o.ready = true,
        _ => {}
    }
}

impl Drop for EdgeNode {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Processes it started (upgrades) are in its group.
        let _ = nix::sys::signal::killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
    }
}

/// A child process killed (and reaped) when dropped, so that a failing
/// test leaves nothing running.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A process this test did not spawn itself but caused (an upgraded edge):
/// SIGKILLed when dropped if still running.
#[derive(Debug)]
pub struct PidGuard(pub u32);

impl Drop for PidGuard {
    fn drop(&mut self) {
        if pid_alive(self.0) {
            let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
        }
    }
}

/// Whether `pid` is a process that has not exited (a zombie has).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::general_path;

    #[test]
    fn the_general_path_switch_goes_into_server_or_a_new_server_table() {
        assert_eq!(
            general_path("[server]\nthreads = 1\n", false),
            "[server]\nthreads = 1\n"
        );
        assert_eq!(
            general_path("[admin]\nx = 1\n[server]\nthreads = 1\n", true),
            "[admin]\nx = 1\n[server]\nfast_paths = false\nthreads = 1\n"
        );
        assert_eq!(
            general_path("[[listener]]\nname = \"a\"\n", true),
            "[[listener]]\nname = \"a\"\n\n[server]\nfast_paths = false\n"
        );
        let own = "[server]\nfast_paths = true\n";
        assert_eq!(general_path(own, true), own);
    }
}
