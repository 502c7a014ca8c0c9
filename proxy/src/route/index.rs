//! An index over the route table, so that finding a request's route costs
//! what the request's own host and path cost, not the number of routes
//! (issue 17: 10,000 host routes cost 3.5× one route when the table was
//! scanned).
//!
//! Routes keep their priority order: each route is filed, by its index,
//! under every host key and path key its conditions could match, and a
//! lookup merges the few lists that apply to the request in ascending
//! index order, testing each candidate's whole matcher until one holds.
//! So the first route returned is the first one of the table whose every
//! condition holds, exactly as a scan would find it.
//!
//! - Host: an exact host is a hash map entry; a wildcard `*.example.com`
//!   (stored as the suffix `.example.com`) is an entry of the suffix map,
//!   looked up once per dot of the request's host; routes without a host
//!   condition are in the "any host" bucket.
//! - Path, within each host bucket: `path_exact` is a hash map entry;
//!   `path_prefix` is a node of a byte trie, collected while the request's
//!   path is walked once; routes with `path_regex` or no path condition
//!   are in the "any path" list (their regex runs only for them).
//!
//! Cost of a lookup: O(host length + path length) map and trie steps plus
//! the candidates actually tested, independent of the table's size.

use std::collections::HashMap;

use edge_config::HostMatch;

use super::matcher::PathKind;

/// At most this many candidate lists are merged without allocating; a
/// request that would need more (a host with dozens of labels, each a
/// configured wildcard) falls back to the plain scan, which is correct.
const MAX_LISTS: usize = 32;

/// Routes by path, within one host bucket. Values are route indexes in
/// ascending order.
#[derive(Default)]
struct PathIndex {
    exact: HashMap<Box<str>, Vec<u32>>,
    prefixes: Trie,
    any: Vec<u32>,
}

/// A byte trie of `path_prefix` values. Node 0 is the root (the empty
/// prefix).
struct Trie {
    nodes: Vec<TrieNode>,
}

#[derive(Default)]
struct TrieNode {
    /// Children sorted by byte.
    children: Vec<(u8, u32)>,
    /// Routes whose prefix ends at this node.
    routes: Vec<u32>,
}

impl Default for Trie {
    fn default() -> Self {
        Self {
            nodes: vec![TrieNode::default()],
        }
    }
}

impl Trie {
    fn insert(&mut self, prefix: &[u8], route: u32) {
        let mut at = 0usize;
        for &b in prefix {
            let node = &self.nodes[at];
            at = match node.children.binary_search_by_key(&b, |c| c.0) {
                Ok(i) => node.children[i].1 as usize,
                Err(i) => {
                    let next = self.nodes.len();
                    self.nodes.push(TrieNode::default());
                    self.nodes[at].children.insert(i, (b, next as u32));
                    next
                }
            };
        }
        self.nodes[at].routes.push(route);
    }

    /// Every non-empty route list of a prefix of `path`; false when there
    /// were more than `out` can hold.
    fn collect<'a>(&'a self, path: &[u8], out: &mut Lists<'a>) -> bool {
        let mut at = 0usize;
        let mut i = 0;
        loop {
            let node = &self.nodes[at];
            if !node.routes.is_empty() && !out.push(&node.routes) {
                return false;
            }
            let Some(&b) = path.get(i) else { return true };
            match node.children.binary_search_by_key(&b, |c| c.0) {
                Ok(c) => at = node.children[c].1 as usize,
                Err(_) => return true,
            }
            i += 1;
        }
    }
}

impl PathIndex {
    fn insert(&mut self, path: &PathKind<'_>, route: u32) {
        match path {
            PathKind::Exact(p) => self.exact.entry((*p).into()).or_default().push(route),
            PathKind::Prefix(p) => self.prefixes.insert(p.as_bytes(), route),
            PathKind::Any => self.any.push(route),
        }
    }

    fn collect<'a>(&'a self, path: &str, out: &mut Lists<'a>) -> bool {
        if !self.any.is_empty() && !out.push(&self.any) {
            return false;
        }
        if let Some(list) = self.exact.get(path) {
            if !out.push(list) {
                return false;
            }
        }
        self.prefixes.collect(path.as_bytes(), out)
    }
}

/// The candidate lists of one lookup, on the stack.
struct Lists<'a> {
    lists: [&'a [u32]; MAX_LISTS],
    len: usize,
}

impl<'a> Lists<'a> {
    fn new() -> Self {
        Self {
            lists: [&[]; MAX_LISTS],
            len: 0,
        }
    }

    fn push(&mut self, list: &'a [u32]) -> bool {
        if self.len == MAX_LISTS {
            return false;
        }
        self.lists[self.len] = list;
        self.len += 1;
        true
    }

    /// Route indexes of every list, merged in ascending order, each once;
    /// stops at the first for which `test` holds.
    fn first(&mut self, mut test: impl FnMut(usize) -> bool) -> Option<usize> {
        let lists = &mut self.lists[..self.len];
        loop {
            let min = lists.iter().filter_map(|l| l.first()).min().copied()?;
            for l in lists.iter_mut() {
                while l.first() == Some(&min) {
                    *l = &l[1..];
                }
            }
            if test(min as usize) {
                return Some(min as usize);
            }
        }
    }
}

/// See the module documentation.
#[derive(Default)]
pub struct RouteIndex {
    exact: HashMap<Box<str>, PathIndex>,
    suffix: HashMap<Box<str>, PathIndex>,
    any: PathIndex,
}

impl RouteIndex {
    /// `routes` yields each route's host conditions and path condition, in
    /// table order.
    pub fn build<'a>(routes: impl Iterator<Item = (&'a [HostMatch], PathKind<'a>)>) -> RouteIndex {
        let mut index = RouteIndex::default();
        for (i, (hosts, path)) in routes.enumerate() {
            let i = i as u32;
            if hosts.is_empty() {
                index.any.insert(&path, i);
            }
            for (n, host) in hosts.iter().enumerate() {
                if hosts[..n].contains(host) {
                    continue;
                }
                let bucket = match host {
                    HostMatch::Exact(h) => index.exact.entry(h.as_str().into()).or_default(),
                    HostMatch::Suffix(s) => index.suffix.entry(s.as_str().into()).or_default(),
                };
                // A route naming several hosts one request matches (an
                // exact host and a wildcard over it) is in several lists;
                // the merge yields it once.
                bucket.insert(&path, i);
            }
        }
        index
    }

    /// The first route for which `test` holds, among those whose host and
    /// path conditions could match `host` and `path`.
    pub fn first(&self, host: &str, path: &str, test: impl FnMut(usize) -> bool) -> Lookup {
        let mut lists = Lists::new();
        if !self.any.collect(path, &mut lists) {
            return Lookup::Scan;
        }
        if let Some(bucket) = self.exact.get(host) {
            if !bucket.collect(path, &mut lists) {
                return Lookup::Scan;
            }
        }
        if !self.suffix.is_empty() {
            // `.example.com` matches a host that is longer and ends with
            // it: every dot of the host after its first byte starts one.
            for (i, b) in host.bytes().enumerate().skip(1) {
                if b != b'.' {
                    continue;
                }
                if let Some(bucket) = self.suffix.get(&host[i..]) {
                    if !bucket.collect(path, &mut lists) {
                        return Lookup::Scan;
                    }
                }
            }
        }
        match lists.first(test) {
            Some(i) => Lookup::Route(i),
            None => Lookup::NoRoute,
        }
    }
}

/// What [`RouteIndex::first`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The index of the first matching route.
    Route(usize),
    /// No route matches.
    NoRoute,
    /// The request needs more candidate lists than a lookup holds (a host
    /// of dozens of labels, each a configured wildcard): scan the table.
    Scan,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists_of(routes: &[(Vec<HostMatch>, PathKind<'static>)]) -> RouteIndex {
        RouteIndex::build(routes.iter().map(|(h, p)| (h.as_slice(), *p)))
    }

    #[test]
    fn merge_is_ascending_and_deduplicated() {
        let a = [1u32, 4, 9];
        let b = [2u32, 4, 10];
        let c = [0u32];
        let mut l = Lists::new();
        l.push(&a);
        l.push(&b);
        l.push(&c);
        let mut seen = Vec::new();
        assert_eq!(
            l.first(|i| {
                seen.push(i);
                false
            }),
            None
        );
        assert_eq!(seen, [0, 1, 2, 4, 9, 10]);
    }

    #[test]
    fn trie_collects_every_prefix_of_the_path() {
        let index = lists_of(&[
            (vec![], PathKind::Prefix("/a")),
            (vec![], PathKind::Prefix("/ab/")),
            (vec![], PathKind::Prefix("/b")),
            (vec![], PathKind::Prefix("/")),
            (vec![], PathKind::Exact("/ab/c")),
            (vec![], PathKind::Any),
        ]);
        let mut seen = Vec::new();
        let r = index.first("h", "/ab/c", |i| {
            seen.push(i);
            false
        });
        assert_eq!(r, Lookup::NoRoute);
        assert_eq!(seen, [0, 1, 3, 4, 5]);
    }

    #[test]
    fn too_many_wildcard_levels_fall_back_to_the_scan() {
        let mut routes = Vec::new();
        let mut host = String::from("x");
        for i in 0..40 {
            host = format!("l{i}.{host}");
        }
        // Every suffix of the host is a configured wildcard.
        for (i, _) in host.match_indices('.') {
            routes.push((
                vec![HostMatch::Suffix(host[i..].to_string())],
                PathKind::Any,
            ));
        }
        let index = RouteIndex::build(routes.iter().map(|(h, p)| (h.as_slice(), *p)));
        assert_eq!(index.first(&host, "/", |_| true), Lookup::Scan);
        assert_eq!(index.first("other", "/", |_| true), Lookup::NoRoute);
    }
}
