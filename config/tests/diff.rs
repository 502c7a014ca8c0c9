//! `ConfigDiff` says what changed and whether new sockets are needed.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;

fn parse(text: &str) -> edge_config::Config {
    edge_config::parse_str(text, "t.toml", Path::new(".")).unwrap_or_else(|d| panic!("{d}"))
}

const BASE: &str = r#"
[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:8080"
[[pool]]
name = "a"
backends = [{ address = "127.0.0.1:9000" }]
[[route]]
name = "all"
pool = "a"
"#;

#[test]
fn identical_configs_have_no_diff() {
    let d = edge_config::ConfigDiff::between(&parse(BASE), &parse(BASE));
    assert!(d.is_empty(), "{d}");
    assert_eq!(d.to_string(), "no changes");
    assert!(!d.needs_new_listeners());
}

#[test]
fn a_changed_pool_is_named_and_needs_no_sockets() {
    let new = BASE.replace("127.0.0.1:9000", "127.0.0.1:9001");
    let d = edge_config::ConfigDiff::between(&parse(BASE), &parse(&new));
    assert_eq!(d.pools.changed, vec!["a".to_string()]);
    assert!(d.listeners.is_empty());
    assert!(!d.needs_new_listeners());
    assert_eq!(d.to_string(), "pools ~a");
}

#[test]
fn a_new_or_moved_listener_needs_sockets() {
    let moved = BASE.replace("127.0.0.1:8080", "127.0.0.1:8081");
    let d = edge_config::ConfigDiff::between(&parse(BASE), &parse(&moved));
    assert_eq!(d.rebind, vec!["web".to_string()]);
    assert!(d.needs_new_listeners());

    let added = format!(
        "{BASE}\n[[listener]]\nname = \"web2\"\nkind = \"http\"\naddress = \"127.0.0.1:8082\"\n"
    );
    let d = edge_config::ConfigDiff::between(&parse(BASE), &parse(&added));
    assert_eq!(d.listeners.added, vec!["web2".to_string()]);
    assert!(d.needs_new_listeners());
    let d = edge_config::ConfigDiff::between(&parse(&added), &parse(BASE));
    assert_eq!(d.listeners.removed, vec!["web2".to_string()]);
    assert!(!d.needs_new_listeners());
}

#[test]
fn thread_count_changes_need_a_restart() {
    let more = format!("[server]\nthreads = 4\n{BASE}");
    let d = edge_config::ConfigDiff::between(&parse(BASE), &parse(&more));
    assert!(d.server);
    assert_eq!(d.restart_required.len(), 1, "{d}");
    assert!(d.to_string().contains("needs a restart"), "{d}");
}

#[test]
fn route_priority_reorders_evaluation() {
    let two = format!("{BASE}\n[[route]]\nname = \"api\"\npriority = 5\npool = \"a\"\n[route.match]\npath_prefix = \"/api\"\n");
    let c = parse(&two);
    let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["api", "all"]);
}
