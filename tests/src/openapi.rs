//! Checks real exchanges with the daemon against docs/openapi.yaml (Debian's
//! python3-yaml and python3-jsonschema): every status and body a test saw
//! must be documented and fit its schema, and every body the daemon refused
//! must be one the schema refuses too.

use std::{path::Path, process::Command, time::Duration};

use serde_json::Value;

use crate::{process::run_with_input, prometheus::SYSTEM_PYTHON};

/// One exchange to check against docs/openapi.yaml.
#[derive(Debug, Clone)]
pub enum ApiCheck {
    /// An answer: route template (`/v1/rules/{id}`), method, status, the
    /// Content-Type without parameters, and the JSON body (if it has one).
    Response {
        route: String,
        method: String,
        status: u16,
        content_type: String,
        body: Option<Value>,
    },
    /// A POST /v1/rules body and whether the daemon accepted it: the
    /// document's `RuleSpec` must agree.
    RuleSpec { body: Value, accepted: bool },
}

impl ApiCheck {
    /// The [`ApiCheck::Response`] of answer `r` to `method route`.
    pub fn response(route: &str, method: &str, r: &crate::http::Response) -> Self {
        let content_type = r
            .header("content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let body = content_type.ends_with("json").then(|| r.json());
        Self::Response {
            route: route.to_string(),
            method: method.to_string(),
            status: r.status,
            content_type,
            body,
        }
    }
}

const OPENAPI_SCRIPT: &str = r#"
import json, sys, yaml, jsonschema
doc = yaml.safe_load(open(sys.argv[1]))
resolver = jsonschema.RefResolver.from_schema(doc)
def deref(x):
    while isinstance(x, dict) and "$ref" in x:
        x = resolver.resolve(x["$ref"])[1]
    return x
def errors(schema, value):
    v = jsonschema.Draft202012Validator(schema, resolver=resolver)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(value)]
out = []
for c in json.load(sys.stdin):
    if c["kind"] == "spec":
        schema = doc["paths"]["/v1/rules"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        errs = errors(schema, c["body"])
        if c["accepted"] and errs:
            out.append(f"accepted body {json.dumps(c['body'])} does not fit RuleSpec: {errs}")
        if not c["accepted"] and not errs:
            out.append(f"refused body {json.dumps(c['body'])} fits RuleSpec")
        continue
    what = f"{c['method']} {c['route']} -> {c['status']}"
    op = doc["paths"].get(c["route"], {}).get(c["method"].lower())
    if op is None:
        out.append(f"{what}: no such operation in the document")
        continue
    resp = op["responses"].get(str(c["status"]))
    if resp is None:
        out.append(f"{what}: status not documented")
        continue
    content = deref(resp).get("content", {})
    media = next((v for k, v in content.items() if k.split(";")[0].strip() == c["content_type"]), None)
    if media is None:
        out.append(f"{what}: content type {c['content_type']} not documented (has {list(content)})")
        continue
    if c["body"] is not None:
        for e in errors(media["schema"], c["body"]):
            out.append(f"{what}: {e}; body {json.dumps(c['body'])[:300]}")
print(json.dumps(out))
"#;

/// Checks exchanges against the OpenAPI document at `doc` with Debian's
/// python3-yaml and python3-jsonschema; returns every disagreement.
pub fn check_openapi(doc: &Path, checks: &[ApiCheck]) -> Vec<String> {
    let input: Vec<Value> = checks
        .iter()
        .map(|c| match c {
            ApiCheck::Response {
                route,
                method,
                status,
                content_type,
                body,
            } => serde_json::json!({
                "kind": "response", "route": route, "method": method, "status": status,
                "content_type": content_type, "body": body,
            }),
            ApiCheck::RuleSpec { body, accepted } => {
                serde_json::json!({ "kind": "spec", "body": body, "accepted": accepted })
            }
        })
        .collect();
    let text = Value::Array(input).to_string();
    let out = run_with_input(
        Command::new(SYSTEM_PYTHON)
            .args(["-c", OPENAPI_SCRIPT])
            .arg(doc),
        text.as_bytes(),
        Duration::from_secs(60),
    );
    let stderr = &out.stderr;
    assert!(
        out.status.success(),
        "the OpenAPI check failed ({}; needs python3-yaml and python3-jsonschema): {stderr}",
        out.status
    );
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("OpenAPI check output: {e}: {stderr}"))
}
