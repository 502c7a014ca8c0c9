//! Which routes can match a host: finding a route costs what the routes
//! that name that host (or a wildcard above it, or no host) cost, not the
//! whole table, as nginx's `server_name` hash and Envoy's virtual-host map
//! do. Routes keep their order: candidates are tried in table order, so
//! the first match is the same as a scan of every route would find.

use std::collections::HashMap;

use edge_config::HostMatch;

/// Route indices by the hosts they name.
#[derive(Debug, Default)]
pub struct HostIndex {
    /// `example.com` → routes naming it, ascending.
    exact: HashMap<String, Vec<u32>>,
    /// `.example.com` (from `*.example.com`) → routes, ascending.
    suffix: HashMap<String, Vec<u32>>,
    /// Routes with no host condition, ascending.
    any: Vec<u32>,
}

impl HostIndex {
    /// Indexes routes by their host conditions, in table order.
    pub fn build<'a>(routes: impl Iterator<Item = &'a [HostMatch]>) -> HostIndex {
        let mut index = HostIndex::default();
        for (i, hosts) in routes.enumerate() {
            let i = i as u32;
            if hosts.is_empty() {
                index.any.push(i);
            }
            for h in hosts {
                let list = match h {
                    HostMatch::Exact(e) => index.exact.entry(e.clone()).or_default(),
                    HostMatch::Suffix(s) => index.suffix.entry(s.clone()).or_default(),
                };
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        index
    }

    /// The first candidate route for `host` (lower-case, no port), in
    /// table order, for which `matches` holds.
    pub fn find(&self, host: &str, mut matches: impl FnMut(usize) -> bool) -> Option<usize> {
        let mut lists: Vec<&[u32]> = Vec::with_capacity(4);
        if let Some(l) = self.exact.get(host) {
            lists.push(l);
        }
        if !self.suffix.is_empty() {
            // Every proper suffix that starts at a dot: `a.b.c` → `.b.c`, `.c`.
            for (i, _) in host.match_indices('.').filter(|(i, _)| *i > 0) {
                if let Some(l) = self.suffix.get(&host[i..]) {
                    lists.push(l);
                }
            }
        }
        lists.push(&self.any);
        if lists.len() == 1 {
            return lists[0].iter().map(|i| *i as usize).find(|i| matches(*i));
        }
        // A k-way merge of short ascending lists.
        let mut heads = vec![0usize; lists.len()];
        loop {
            let next = lists
                .iter()
                .zip(&heads)
                .filter_map(|(l, h)| l.get(*h))
                .min()
                .copied()?;
            for (l, h) in lists.iter().zip(heads.iter_mut()) {
                if l.get(*h) == Some(&next) {
                    *h += 1;
                }
            }
            if matches(next as usize) {
                return Some(next as usize);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(h: &str) -> HostMatch {
        HostMatch::Exact(h.into())
    }

    fn suffix(h: &str) -> HostMatch {
        HostMatch::Suffix(h.into())
    }

    /// Every candidate, in order (nothing matches).
    fn candidates(index: &HostIndex, host: &str) -> Vec<usize> {
        let mut seen = Vec::new();
        index.find(host, |i| {
            seen.push(i);
            false
        });
        seen
    }

    #[test]
    fn candidates_are_the_routes_that_can_match_in_table_order() {
        let routes = vec![
            vec![exact("a.example")],                          // 0
            vec![],                                            // 1
            vec![suffix(".example")],                          // 2
            vec![exact("b.example"), exact("a.example")],      // 3
            vec![suffix(".x.a.example"), suffix(".example")],  // 4
            vec![exact("A.example")],                          // 5: never (hosts are lower-case)
            vec![],                                            // 6
        ];
        let index = HostIndex::build(routes.iter().map(Vec::as_slice));
        assert_eq!(candidates(&index, "a.example"), [0, 1, 2, 3, 4, 6]);
        assert_eq!(candidates(&index, "b.example"), [1, 2, 3, 4, 6]);
        assert_eq!(candidates(&index, "y.x.a.example"), [1, 2, 4, 6]);
        // A wildcard does not match its apex.
        assert_eq!(candidates(&index, "example"), [1, 6]);
        assert_eq!(candidates(&index, "other"), [1, 6]);
        assert_eq!(candidates(&index, ""), [1, 6]);
        assert_eq!(candidates(&index, ".example"), [1, 6]);
        assert_eq!(index.find("a.example", |i| i >= 3), Some(3));
        assert_eq!(index.find("other", |_| false), None);
    }
}
