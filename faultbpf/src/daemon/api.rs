//! The HTTP/JSON API (documented in docs/openapi.yaml). Every error is an
//! `application/problem+json` body with a fixed status per kind: bad body
//! 400, guarded port 403, not found 404, conflict 409, body too large 413,
//! what this daemon cannot do here (a kernel module, a `container` it
//! cannot find) 422, no slot left 507; anything else is logged and becomes
//! 500.
//!
//! Handlers that read or write the rule table run on the blocking pool
//! ([`with_state`]), so a request that writes a wide port range never holds
//! up the runtime, other connections or `/healthz`, which answers from a
//! snapshot ([`Health`]) without taking the rule lock. A panic in a handler
//! is caught there and becomes a logged 500.

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Request, State as AxState, rejection::BytesRejection},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};

use super::{
    log, metrics,
    state::{State, StateError},
};
use crate::{
    api::{Health, Origin, Removed, RuleInfo, RuleList, RuleStats},
    spec::RuleSpec,
};

/// The state the handlers share, and its health snapshot (what
/// `/healthz` shows, copied out of the state after every change).
pub struct Inner {
    state: Mutex<State>,
    health: Mutex<Health>,
}

#[derive(Clone)]
pub struct Shared(Arc<Inner>);

impl Shared {
    pub fn new(st: State) -> Self {
        let s = Self(Arc::new(Inner {
            state: Mutex::new(st),
            health: Mutex::new(Health {
                status: "ok".into(),
                attach: String::new(),
                interfaces: Vec::new(),
                rules: 0,
            }),
        }));
        s.publish(&s.lock());
        s
    }

    /// The rule table. A panic while holding the lock cannot leave the
    /// table half-changed in a way later calls would trip on (see
    /// `state.rs`); keep serving.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refreshes the health snapshot from `st` (held by the caller).
    pub fn publish(&self, st: &State) {
        let h = Health {
            status: "ok".into(),
            attach: st.inj.mode().name().into(),
            interfaces: st.inj.interfaces().to_vec(),
            rules: st.len(),
        };
        *self.0.health.lock().unwrap_or_else(|p| p.into_inner()) = h;
    }

    pub fn health(&self) -> Health {
        self.0
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Runs `f` on the rule table on the blocking pool, then refreshes the
/// health snapshot. A panic in `f` is logged and answered with 500.
pub async fn with_state<T, F>(s: &Shared, f: F) -> Result<T, Problem>
where
    T: Send + 'static,
    F: FnOnce(&mut State) -> Result<T, Problem> + Send + 'static,
{
    let s = s.clone();
    let joined = tokio::task::spawn_blocking(move || {
        // Blocking-pool threads only ever run this: lowering them once is
        // enough, and repeating it costs one syscall.
        super::set_thread_nice(super::HANDLER_NICE);
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut st = s.lock();
            let r = f(&mut st);
            s.publish(&st);
            r
        }));
        if r.is_err() {
            s.publish(&s.lock());
        }
        r
    })
    .await;
    match joined {
        Ok(Ok(r)) => r,
        Ok(Err(_)) | Err(_) => {
            log("internal error: a request handler panicked (a bug; see the panic above)");
            Err(Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: the request failed and changed nothing; see the daemon's log",
            ))
        }
    }
}

/// Largest request body; a rule spec is a few hundred bytes.
pub const BODY_LIMIT: usize = 1 << 20;

/// Every route, for the Unix socket (and, behind a token, TCP).
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/rules", get(list).post(create).delete(delete_all))
        .route("/v1/rules/{id}", get(get_one).delete(delete_one))
        .route("/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// `/metrics` only, for `--metrics ADDR`.
pub fn metrics_router(state: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

/// Requires `Authorization: Bearer TOKEN` on every request.
pub fn with_token(router: Router, token: String) -> Router {
    let token = Arc::new(token);
    router.layer(middleware::from_fn(move |req: Request, next: Next| {
        let token = token.clone();
        async move {
            let ok = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), token.as_bytes()));
            if ok {
                next.run(req).await
            } else {
                Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "a bearer token is required: Authorization: Bearer <token from --token-file>",
                )
                .into_response()
            }
        }
    }))
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An RFC 9457 problem body.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    detail: String,
}

impl Problem {
    fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = crate::api::Problem {
            kind: "about:blank".into(),
            title: self.status.canonical_reason().unwrap_or("error").into(),
            status: self.status.as_u16(),
            detail: self.detail,
        };
        let mut r = (self.status, Json(body)).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        r
    }
}

impl From<StateError> for Problem {
    fn from(e: StateError) -> Self {
        let status = match &e {
            StateError::Invalid(_) => StatusCode::BAD_REQUEST,
            StateError::Guarded(_) => StatusCode::FORBIDDEN,
            StateError::NotFound(_) => StatusCode::NOT_FOUND,
            StateError::Conflict(_) => StatusCode::CONFLICT,
            StateError::Full => StatusCode::INSUFFICIENT_STORAGE,
            StateError::TooLong(_) | StateError::InRule { .. } => StatusCode::BAD_REQUEST,
            StateError::Kernel(crate::Error::Unsupported(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            StateError::Target(_) | StateError::HostNetwork(_) => StatusCode::UNPROCESSABLE_ENTITY,
            StateError::Http(h) => {
                if let crate::http::StartError::Steer { .. } = h {
                    log(&format!("http rule refused: {}", crate::error::chain(h)));
                }
                StatusCode::UNPROCESSABLE_ENTITY
            }
            StateError::Kernel(k) => {
                log(&format!("internal error: {}", crate::error::chain(k)));
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self::new(status, e.to_string())
    }
}

fn parse_id(raw: &str) -> Result<u32, Problem> {
    raw.parse().map_err(|_| {
        Problem::new(
            StatusCode::NOT_FOUND,
            format!("no rule `{raw}`: ids are numbers"),
        )
    })
}

async fn list(AxState(s): AxState<Shared>) -> Result<Json<RuleList<RuleInfo>>, Problem> {
    with_state(&s, |st| Ok(Json(RuleList { rules: st.list() }))).await
}

async fn create(
    AxState(s): AxState<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<RuleInfo>), Problem> {
    let body = body.map_err(|e| Problem::new(e.status(), e.body_text()))?;
    let spec = parse_spec(&body)?;
    let found = match &spec.container {
        // Asked of the engine before the rule lock (a slow engine holds up
        // this request only); the spec is checked first, so a bad rule is
        // refused without asking anyone.
        Some(name) => {
            spec.validate(0, &crate::spec::Policy::default())
                .map_err(|e| {
                    Problem::from(if e.guarded {
                        StateError::Guarded(e.message)
                    } else {
                        StateError::Invalid(e)
                    })
                })?;
            let (name, engine) = (name.clone(), spec.engine);
            let found = tokio::task::spawn_blocking(move || super::state::find(&name, engine))
                .await
                .map_err(|_| {
                    Problem::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal error: finding the container failed; see the daemon's log",
                    )
                })?;
            Some(found.map_err(|e| Problem::from(StateError::Target(e)))?)
        }
        None => None,
    };
    with_state(&s, move |st| {
        let id = st.add(spec, Origin::Api, found.as_ref())?;
        let info = st.info(id).ok_or(StateError::NotFound(id))?;
        log(&format!(
            "rule {id} added: {}{}{} (api)",
            info.description,
            info.target
                .as_ref()
                .map_or_else(String::new, |t| format!(" in {t}")),
            expiry_text(info.expires_in_seconds)
        ));
        Ok((StatusCode::CREATED, Json(info)))
    })
    .await
}

/// A rule body: JSON, an object, no `null` values (a field is given or
/// left out, as the OpenAPI document says), then the `RuleSpec` fields.
fn parse_spec(body: &[u8]) -> Result<RuleSpec, Problem> {
    let bad = |m: String| Problem::new(StatusCode::BAD_REQUEST, format!("bad rule: {m}"));
    // Straight from the bytes first, so a syntax error names its line and
    // column; then the nulls the typed parse lets through as "absent".
    let spec: RuleSpec = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    if let Some((k, _)) = v
        .as_object()
        .and_then(|o| o.iter().find(|(_, v)| v.is_null()))
    {
        return Err(bad(format!(
            "`{k}` is null; give it a value or leave it out"
        )));
    }
    Ok(spec)
}

fn expiry_text(secs: Option<f64>) -> String {
    match secs {
        Some(s) => format!(", expires in {}s", s.round()),
        None => String::new(),
    }
}

async fn get_one(
    AxState(s): AxState<Shared>,
    Path(raw): Path<String>,
) -> Result<Json<RuleInfo>, Problem> {
    let id = parse_id(&raw)?;
    with_state(&s, move |st| {
        st.info(id)
            .map(Json)
            .ok_or_else(|| StateError::NotFound(id).into())
    })
    .await
}

async fn delete_one(
    AxState(s): AxState<Shared>,
    Path(raw): Path<String>,
) -> Result<Json<RuleInfo>, Problem> {
    let id = parse_id(&raw)?;
    with_state(&s, move |st| {
        let info = st.info(id).ok_or(StateError::NotFound(id))?;
        st.delete(id)?;
        log(&format!("rule {id} removed: {} (api)", info.description));
        Ok(Json(info))
    })
    .await
}

async fn delete_all(AxState(s): AxState<Shared>) -> Result<Json<Removed>, Problem> {
    with_state(&s, |st| {
        let n = st.remove_all(None);
        log(&format!("all rules removed ({n}) (api)"));
        Ok(Json(Removed { removed: n }))
    })
    .await
}

async fn stats(AxState(s): AxState<Shared>) -> Result<Json<RuleList<RuleStats>>, Problem> {
    with_state(&s, |st| Ok(Json(RuleList { rules: st.stats() }))).await
}

async fn metrics(AxState(s): AxState<Shared>) -> Result<Response, Problem> {
    let text = with_state(&s, |st| Ok(metrics::render(&st.stats()))).await?;
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

/// Answers from the snapshot: never waits for the rule lock.
async fn healthz(AxState(s): AxState<Shared>) -> Json<Health> {
    Json(s.health())
}

async fn not_found(req: Request) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        format!("no route {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}
