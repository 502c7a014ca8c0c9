//! The admin API as one list of annotated handlers: the same declaration
//! makes the axum routes and the OpenAPI 3.1 document (`utoipa`,
//! `utoipa-axum`), so `/openapi.json` and `docs/admin-api.md` list exactly
//! what the listener serves.

use std::sync::{Arc, OnceLock};

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{cache, cmcd, dashboard, dns, explain, pools, prefill, site, state};
use crate::runtime::Runtime;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "edge admin API",
        description = "The admin listener of an edge node (loopback unless `admin.allow_remote`). \
Reads are open except `GET /config`; every call that changes something needs \
`Authorization: Bearer <admin.token>` and is refused with 403 when no token is configured. \
What the API changes lasts until the next reload and is listed under `admin_overrides` in `GET /config`. \
Bodies are JSON unless a response says otherwise; errors are `{\"error\": \"…\"}` or, for the \
health endpoints, text.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&TokenScheme),
    components(schemas(ErrorBody)),
    tags(
        (name = "dashboard", description = "The live dashboard and the JSON it polls"),
        (name = "node", description = "Liveness, readiness, config, metrics, reload and binary upgrade"),
        (name = "pools", description = "Pools and backends: state, drain, disable, enable, weight"),
        (name = "cache", description = "Cache tiers, purges, lookups and prefill"),
        (name = "dns", description = "GeoDNS sites and why a client goes where it goes"),
        (name = "site", description = "The node's site: peers, steering state, digest, players' CMCD"),
    )
)]
struct Doc;

/// The bearer scheme the mutating calls name.
struct TokenScheme;

impl Modify for TokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some("`admin.token` (or the variable `admin.token_env` names)".into());
        components.add_security_scheme(TOKEN_SCHEME, SecurityScheme::Http(scheme));
    }
}

/// The security scheme's name in the document.
pub const TOKEN_SCHEME: &str = "admin_token";

/// What a refused or failed JSON call answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What was wrong, for a person to read.
    pub error: String,
}

/// What a call whose JSON body could not be read gets: 413 when the body
/// is larger than the admin API takes (axum's limit, 2 MB), else 400 with
/// what was expected and what was wrong.
pub fn body_rejected(e: &axum::extract::rejection::JsonRejection, expected: &str) -> Response {
    let status = if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE
    } else {
        axum::http::StatusCode::BAD_REQUEST
    };
    let body = ErrorBody {
        error: format!("{expected}: {e}"),
    };
    (status, axum::Json(body)).into_response()
}

/// Every route of the admin API with its documentation.
pub fn routes() -> OpenApiRouter<Arc<Runtime>> {
    OpenApiRouter::with_openapi(Doc::openapi())
        .routes(routes!(dashboard::page))
        .routes(routes!(dashboard::script))
        .routes(routes!(dashboard::style))
        .routes(routes!(dashboard::icon))
        .routes(routes!(dashboard::stats))
        .routes(routes!(dashboard::events))
        .routes(routes!(openapi_json))
        .routes(routes!(super::live))
        .routes(routes!(super::ready))
        .routes(routes!(super::config))
        .routes(routes!(super::metrics))
        .routes(routes!(super::reload))
        .routes(routes!(super::upgrade))
        .routes(routes!(pools::list))
        .routes(routes!(pools::set_state))
        .routes(routes!(pools::add_backend))
        .routes(routes!(pools::remove_backend))
        .routes(routes!(pools::set_weight, pools::clear_weight))
        .routes(routes!(cache::usage))
        .routes(routes!(cache::purge))
        .routes(routes!(explain::lookup))
        .routes(routes!(prefill::status, prefill::start, prefill::cancel))
        .routes(routes!(dns::sites))
        .routes(routes!(dns::set_drain))
        .routes(routes!(explain::explain))
        .routes(routes!(site::view))
        .routes(routes!(state::view))
        .routes(routes!(state::digest))
        .routes(routes!(cmcd::view))
}

/// The OpenAPI document of [`routes`].
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = routes().into_openapi();
        // utoipa names operations after their functions (`view` twice);
        // OpenAPI wants them unique: the method and the path's words.
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [
                ("get", &mut item.get),
                ("put", &mut item.put),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
                ("patch", &mut item.patch),
            ];
            for (method, op) in ops {
                if let Some(op) = op {
                    op.operation_id = Some(operation_id(method, path));
                }
            }
        }
        doc
    })
}

/// `post` `/pools/{pool}/backends/{backend}/weight` →
/// `post_pools_pool_backends_backend_weight`; `/` is `root`.
fn operation_id(method: &str, path: &str) -> String {
    let words: Vec<String> = path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    if words.is_empty() {
        format!("{method}_root")
    } else {
        format!("{method}_{}", words.join("_"))
    }
}

/// `GET /openapi.json`
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "node",
    summary = "This API's OpenAPI 3.1 document",
    responses((status = 200, description = "The document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> Response {
    static JSON: OnceLock<String> = OnceLock::new();
    let text = JSON.get_or_init(|| {
        super::openapi_text(false).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    });
    ([(header::CONTENT_TYPE, "application/json")], text.as_str()).into_response()
}

/// `docs/admin-api.md`: the document as Markdown, grouped by tag.
pub fn markdown(doc: &utoipa::openapi::OpenApi) -> String {
    let doc = serde_json::to_value(doc).unwrap_or_default();
    markdown::render(&doc)
}

mod markdown {
    use std::fmt::Write as _;

    use serde_json::Value;

    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

    /// Table cells: no line breaks, pipes escaped.
    fn cell(s: &str) -> String {
        s.replace('\n', " ").replace('|', "\\|")
    }

    fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
        v.get(key).and_then(Value::as_str).unwrap_or_default()
    }

    /// A schema as a short type expression, `$ref`s as links.
    pub fn type_of(s: &Value) -> String {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or(r);
            return format!("[`{name}`](#{})", name.to_lowercase());
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(list) = s.get(key).and_then(Value::as_array) {
                let parts: Vec<String> = list.iter().map(type_of).collect();
                return parts.join(" or ");
            }
        }
        if let Some(values) = s.get("enum").and_then(Value::as_array) {
            let parts: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
            return parts.join(" or ");
        }
        let kinds: Vec<String> = match s.get("type") {
            Some(Value::String(t)) => vec![t.clone()],
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let one = |t: &str| -> String {
            match t {
                "array" => format!("[{}]", s.get("items").map_or("any".into(), type_of)),
                "object" => match s.get("additionalProperties") {
                    Some(v) if v.is_object() => format!("{{string: {}}}", type_of(v)),
                    _ => "object".into(),
                },
                "integer" | "number" => match s.get("format").and_then(Value::as_str) {
                    Some(f) => format!("{t} ({f})"),
                    None => t.to_string(),
                },
                other => other.to_string(),
            }
        };
        if kinds.is_empty() {
            return "any".into();
        }
        kinds
            .iter()
            .map(|k| one(k))
            .collect::<Vec<_>>()
            .join(" or ")
    }

    fn content_cells(content: Option<&Value>) -> (String, String) {
        let Some(map) = content.and_then(Value::as_object) else {
            return ("".into(), "".into());
        };
        let types: Vec<String> = map.keys().map(|k| format!("`{k}`")).collect();
        let bodies: Vec<String> = map
            .values()
            .filter_map(|m| m.get("schema"))
            .map(type_of)
            .collect();
        (types.join(", "), bodies.join(", "))
    }

    fn auth(op: &Value) -> &'static str {
        match op.get("security").and_then(Value::as_array) {
            None => "no",
            Some(list)
                if list
                    .iter()
                    .any(|r| r.as_object().is_some_and(|o| o.is_empty())) =>
            {
                "when one is configured"
            }
            Some(_) => "yes",
        }
    }

    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
            for (path, item) in paths {
                for m in METHODS {
                    if let Some(op) = item.get(m) {
                        out.push((m.to_uppercase(), path.clone(), op.clone()));
                    }
                }
            }
        }
        out
    }

    pub fn render(doc: &Value) -> String {
        let mut o = String::new();
        let info = &doc["info"];
        let _ = writeln!(o, "# {}\n", str_of(info, "title"));
        o.push_str(
            "<!-- Generated from the admin API's handlers (GET /openapi.json). Do not edit: \
             `EDGE_BLESS=1 cargo test -p edge --bin edge admin_api_reference` rewrites it. -->\n\n",
        );
        let _ = writeln!(o, "{}\n", str_of(info, "description"));
        let _ = writeln!(
            o,
            "OpenAPI {}: `GET /openapi.json` on the admin listener.\n",
            str_of(doc, "openapi")
        );
        let ops = operations(doc);
        o.push_str("| call | what | token |\n|---|---|---|\n");
        for (method, path, op) in &ops {
            let _ = writeln!(
                o,
                "| [`{method} {path}`](#{}) | {} | {} |",
                anchor(method, path),
                cell(str_of(op, "summary")),
                auth(op)
            );
        }
        o.push('\n');
        let tags: Vec<(String, String)> = doc
            .get("tags")
            .and_then(Value::as_array)
            .map(|ts| {
                ts.iter()
                    .map(|t| {
                        (
                            str_of(t, "name").to_string(),
                            str_of(t, "description").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (tag, about) in &tags {
            let _ = writeln!(o, "## {tag}\n\n{about}.\n");
            for (method, path, op) in &ops {
                let in_tag = op
                    .get("tags")
                    .and_then(Value::as_array)
                    .is_some_and(|t| t.iter().any(|x| x == tag.as_str()));
                if in_tag {
                    operation(&mut o, method, path, op);
                }
            }
        }
        o.push_str("## Schemas\n\n");
        if let Some(schemas) = doc
            .pointer("/components/schemas")
            .and_then(Value::as_object)
        {
            for (name, s) in schemas {
                schema(&mut o, name, s);
            }
        }
        o
    }

    fn anchor(method: &str, path: &str) -> String {
        let text = format!("{method} {path}").to_lowercase();
        text.chars()
            .filter_map(|c| match c {
                'a'..='z' | '0'..='9' | '-' | '_' => Some(c),
                ' ' => Some('-'),
                _ => None,
            })
            .collect()
    }

    fn operation(o: &mut String, method: &str, path: &str, op: &Value) {
        let _ = writeln!(o, "### {method} {path}\n");
        let _ = writeln!(o, "{}\n", str_of(op, "summary"));
        let description = str_of(op, "description");
        if !description.is_empty() {
            let _ = writeln!(o, "{description}\n");
        }
        let _ = writeln!(o, "Token: {}.\n", auth(op));
        if let Some(params) = op.get("parameters").and_then(Value::as_array) {
            o.push_str(
                "| parameter | in | required | type | description |\n|---|---|---|---|---|\n",
            );
            for p in params {
                let _ = writeln!(
                    o,
                    "| `{}` | {} | {} | {} | {} |",
                    str_of(p, "name"),
                    str_of(p, "in"),
                    if p["required"] == true { "yes" } else { "no" },
                    cell(&p.get("schema").map(type_of).unwrap_or_default()),
                    cell(str_of(p, "description"))
                );
            }
            o.push('\n');
        }
        if let Some(body) = op.get("requestBody") {
            let (types, schema) = content_cells(body.get("content"));
            let _ = writeln!(o, "Request body ({types}): {schema}\n");
        }
        o.push_str("| status | what | content type | body |\n|---|---|---|---|\n");
        if let Some(responses) = op.get("responses").and_then(Value::as_object) {
            for (status, r) in responses {
                let (types, schema) = content_cells(r.get("content"));
                let _ = writeln!(
                    o,
                    "| {status} | {} | {types} | {} |",
                    cell(str_of(r, "description")),
                    cell(&schema)
                );
            }
        }
        o.push('\n');
    }

    fn schema(o: &mut String, name: &str, s: &Value) {
        let _ = writeln!(o, "### {name}\n");
        let description = str_of(s, "description");
        if !description.is_empty() {
            let _ = writeln!(o, "{description}\n");
        }
        let Some(props) = s.get("properties").and_then(Value::as_object) else {
            let _ = writeln!(o, "{}\n", type_of(s));
            return;
        };
        let required: Vec<&str> = s
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        o.push_str("| field | type | required | description |\n|---|---|---|---|\n");
        for (field, p) in props {
            let _ = writeln!(
                o,
                "| `{field}` | {} | {} | {} |",
                cell(&type_of(p)),
                if required.contains(&field.as_str()) {
                    "yes"
                } else {
                    "no"
                },
                cell(str_of(p, "description"))
            );
        }
        o.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::{document, markdown};

    fn doc() -> Value {
        serde_json::to_value(document()).unwrap()
    }

    #[test]
    fn every_call_is_documented_with_its_errors() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        let mut calls = 0;
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                calls += 1;
                let what = format!("{method} {path}");
                assert!(op["summary"].is_string(), "{what}: no summary");
                assert!(
                    op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                    "{what}: no tag"
                );
                let responses = op["responses"].as_object().unwrap();
                assert!(
                    responses.keys().any(|s| s.starts_with('2')),
                    "{what}: no success"
                );
                for name in path.split('{').skip(1).filter_map(|p| p.split('}').next()) {
                    let declared = op["parameters"].as_array().is_some_and(|ps| {
                        ps.iter().any(|p| p["name"] == name && p["in"] == "path")
                    });
                    assert!(declared, "{what}: path parameter {name} undocumented");
                }
                // Whatever changes state needs the token, and says what a
                // call without it gets.
                if method != "get" {
                    assert_eq!(
                        op["security"][0]["admin_token"],
                        serde_json::json!([]),
                        "{what}"
                    );
                    assert!(
                        responses.contains_key("401") && responses.contains_key("403"),
                        "{what}"
                    );
                }
            }
        }
        assert!(calls >= 30, "{calls} calls");
        let mut ids: Vec<&str> = paths
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .map(|op| op["operationId"].as_str().unwrap())
            .collect();
        ids.sort_unstable();
        let before = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), before, "operation ids are unique: {ids:?}");
        assert!(doc
            .pointer("/components/securitySchemes/admin_token")
            .is_some());
        for schema in [
            "PoolReport",
            "BackendReport",
            "SiteReport",
            "PurgeBody",
            "Spec",
            "ErrorBody",
        ] {
            assert!(
                doc.pointer(&format!("/components/schemas/{schema}"))
                    .is_some(),
                "{schema}"
            );
        }
    }

    /// docs/admin-api.md is the document rendered; `EDGE_BLESS=1` rewrites it.
    #[test]
    fn admin_api_reference_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/admin-api.md");
        let want = markdown(document());
        if std::env::var_os("EDGE_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/admin-api.md is not what the handlers say: EDGE_BLESS=1 cargo test -p edge --bin edge admin_api_reference"
        );
    }

    #[test]
    fn type_expressions() {
        use serde_json::json;
        let t = markdown::type_of;
        assert_eq!(
            t(&json!({"$ref": "#/components/schemas/PoolReport"})),
            "[`PoolReport`](#poolreport)"
        );
        assert_eq!(t(&json!({"type": ["string", "null"]})), "string or null");
        assert_eq!(
            t(&json!({"type": "array", "items": {"type": "integer", "format": "int64"}})),
            "[integer (int64)]"
        );
        assert_eq!(
            t(&json!({"type": "string", "enum": ["a", "b"]})),
            "`\"a\"` or `\"b\"`"
        );
        assert_eq!(
            t(&json!({"type": "object", "additionalProperties": {"type": "string"}})),
            "{string: string}"
        );
        assert_eq!(t(&json!({})), "any");
    }
}
