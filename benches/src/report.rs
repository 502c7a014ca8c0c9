//! Medians, ratios and the markdown table.

use std::fmt::Write;

use crate::wrk::Run;

pub fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// One server's repetitions of one load.
pub struct Samples {
    pub server: String,
    pub runs: Vec<(Run, f64)>,
    /// Of each run's CPU µs per request, the part spent in user space (the
    /// rest is the kernel's, for the same process tree).
    pub user_us: Vec<f64>,
}

impl Samples {
    pub fn rps(&self) -> f64 {
        median(self.runs.iter().map(|(r, _)| r.rps).collect())
    }
    pub fn p50(&self) -> f64 {
        median(self.runs.iter().map(|(r, _)| r.p50_ms).collect())
    }
    pub fn p99(&self) -> f64 {
        median(self.runs.iter().map(|(r, _)| r.p99_ms).collect())
    }
    /// CPU microseconds per request.
    pub fn cpu(&self) -> f64 {
        median(self.runs.iter().map(|(_, c)| *c).collect())
    }
    /// User-space CPU microseconds per request.
    pub fn user(&self) -> f64 {
        median(self.user_us.clone())
    }
    /// Kernel CPU microseconds per request (median of each run's total
    /// less its user part).
    pub fn system(&self) -> f64 {
        median(
            self.runs
                .iter()
                .zip(&self.user_us)
                .map(|((_, c), u)| c - u)
                .collect(),
        )
    }
    pub fn mbps(&self) -> f64 {
        median(self.runs.iter().map(|(r, _)| r.mb_per_s).collect())
    }
    pub fn errors(&self) -> u64 {
        self.runs.iter().map(|(r, _)| r.errors).sum()
    }
}

/// A markdown table of one load, and edge's ratios to each peer.
pub fn table(title: &str, samples: &[Samples], show_mbps: bool) -> String {
    let mut out = format!("\n#### {title}\n\n");
    out.push_str("| server | req/s | p50 ms | p99 ms | CPU µs/req | user | kernel |");
    if show_mbps {
        out.push_str(" MB/s |");
    }
    out.push_str(" errors |\n|---|---:|---:|---:|---:|---:|---:|");
    if show_mbps {
        out.push_str("---:|");
    }
    out.push_str("---:|\n");
    for s in samples {
        let _ = write!(
            out,
            "| {} | {:.0} | {:.3} | {:.3} | {:.1} | {:.1} | {:.1} |",
            s.server,
            s.rps(),
            s.p50(),
            s.p99(),
            s.cpu(),
            s.user(),
            s.system()
        );
        if show_mbps {
            let _ = write!(out, " {:.0} |", s.mbps());
        }
        let _ = writeln!(out, " {} |", s.errors());
    }
    if let Some(edge) = samples.iter().find(|s| s.server == "edge") {
        out.push_str(
            "\n| edge ÷ peer | req/s | p99 | CPU/req | user | kernel |\n|---|---:|---:|---:|---:|---:|\n",
        );
        for peer in samples.iter().filter(|s| s.server != "edge") {
            let _ = writeln!(
                out,
                "| edge ÷ {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                peer.server,
                edge.rps() / peer.rps(),
                edge.p99() / peer.p99(),
                edge.cpu() / peer.cpu(),
                edge.user() / peer.user(),
                edge.system() / peer.system()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn medians() {
        assert_eq!(super::median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(super::median(vec![]).is_nan());
    }
}
