//! The HTTP side: routes, authentication, request checks, and the responses
//! (whole or streamed as server-sent events) built from the engine's events.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request as HttpRequest, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use trinity_model::generate::{Sampling, Tokenizer};

use crate::api::{self, ApiError, ChatRequest, CompletionRequest, Content, Params, Prompt, Stop};
use crate::engine::{EngineHandle, Event, Request, SubmitError};
use crate::metrics::Metrics;

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// The engine.
    pub engine: EngineHandle,
    /// Text in and out; `None` serves token ids only.
    pub tokenizer: Option<Arc<Tokenizer>>,
    /// The id `/v1/models` lists and requests must name.
    pub model_id: String,
    /// Vocabulary size (prompt ids are checked against it).
    pub vocab: usize,
    /// Tokens per sequence.
    pub context: usize,
    /// The largest `max_tokens` accepted.
    pub max_tokens_cap: usize,
    /// The bearer token `/v1/*` requires, when set.
    pub api_key: Option<String>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Response ids.
    pub next_id: AtomicU64,
}

/// The router: `/v1/completions`, `/v1/chat/completions`, `/v1/models` (behind
/// the API key when one is set), `/health`, `/metrics`; bodies capped at `max_body` bytes.
pub fn router(state: Arc<AppState>, max_body: usize) -> Router {
    let v1 = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(v1)
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                message: "no such route".into(),
                kind: "invalid_request_error",
                param: None,
                code: None,
            }
        })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn authenticate(State(st): State<Arc<AppState>>, req: HttpRequest, next: Next) -> Response {
    if let Some(key) = &st.api_key {
        let given =
            req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            st.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
            let message = match given {
                None => "missing bearer token (Authorization: Bearer KEY)",
                Some(_) => "invalid API key",
            };
            return ApiError {
                status: StatusCode::UNAUTHORIZED,
                message: message.into(),
                kind: "authentication_error",
                param: None,
                code: Some("invalid_api_key"),
            }
            .into_response();
        }
    }
    next.run(req).await
}

async fn models(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": st.model_id, "object": "model", "created": unix_now(), "owned_by": "trinity"}]
    }))
}

async fn metrics(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], st.metrics.render())
}

/// Which endpoint a generation answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Completion,
    Chat,
}

async fn completions(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let result = async {
        let body = body_bytes(body)?;
        let req: CompletionRequest = api::parse(&body)?;
        let params: Params = api::parse(&body)?;
        check_model(&st, req.model.as_deref())?;
        if req.echo == Some(true) {
            return Err(ApiError::invalid("`echo` is not supported", Some("echo")));
        }
        let prompt = match req.prompt {
            Prompt::Text(t) => encode(&st, &t, true)?,
            Prompt::Ids(ids) => ids,
            Prompt::Texts(mut t) if t.len() == 1 => encode(&st, &t.remove(0), true)?,
            Prompt::IdLists(mut l) if l.len() == 1 => l.remove(0),
            _ => return Err(ApiError::invalid("only one prompt per request is supported", Some("prompt"))),
        };
        start(&st, Kind::Completion, prompt, &params, 16).await
    }
    .await;
    finish(&st, result)
}

async fn chat(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let result = async {
        let body = body_bytes(body)?;
        let req: ChatRequest = api::parse(&body)?;
        let params: Params = api::parse(&body)?;
        check_model(&st, req.model.as_deref())?;
        let Some(tok) = &st.tokenizer else {
            return Err(ApiError::invalid("this model has no tokenizer: chat needs one", Some("messages")));
        };
        if !tok.has_chat_template() {
            return Err(ApiError::invalid("this model ships no chat template", Some("messages")));
        }
        if req.messages.is_empty() {
            return Err(ApiError::invalid("`messages` is empty", Some("messages")));
        }
        let mut texts = Vec::with_capacity(req.messages.len());
        for m in &req.messages {
            let text = match &m.content {
                Content::Text(t) => t.clone(),
                Content::Parts(parts) => {
                    let mut s = String::new();
                    for p in parts {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => s.push_str(t),
                            _ => {
                                return Err(ApiError::invalid(
                                    format!("content part of type `{}` is not supported", p.kind),
                                    Some("messages"),
                                ));
                            }
                        }
                    }
                    s
                }
            };
            texts.push((m.role.as_str(), text));
        }
        let pairs: Vec<(&str, &str)> = texts.iter().map(|(r, t)| (*r, t.as_str())).collect();
        let framed = tok.render_chat(&pairs).map_err(|e| ApiError::invalid(e.to_string(), Some("messages")))?;
        let prompt = encode(&st, &framed, false)?;
        let default_max = st.context.saturating_sub(prompt.len());
        start(&st, Kind::Chat, prompt, &params, default_max).await
    }
    .await;
    finish(&st, result)
}

fn finish(st: &AppState, result: Result<Response, ApiError>) -> Response {
    match result {
        Ok(r) => r,
        Err(e) => {
            if e.status != StatusCode::TOO_MANY_REQUESTS {
                st.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
            }
            e.into_response()
        }
    }
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| ApiError {
        status: r.status(),
        message: format!("request body: {}", r.body_text()),
        kind: "invalid_request_error",
        param: None,
        code: None,
    })
}

fn check_model(st: &AppState, model: Option<&str>) -> Result<(), ApiError> {
    match model {
        Some(m) if m != st.model_id => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("the model `{m}` does not exist; this server serves `{}`", st.model_id),
            kind: "invalid_request_error",
            param: Some("model"),
            code: Some("model_not_found"),
        }),
        _ => Ok(()),
    }
}

fn encode(st: &AppState, text: &str, special: bool) -> Result<Vec<u32>, ApiError> {
    let Some(tok) = &st.tokenizer else {
        return Err(ApiError::invalid("this model has no tokenizer: send the prompt as token ids", Some("prompt")));
    };
    let ids = if special { tok.encode(text) } else { tok.encode_plain(text) };
    ids.map_err(|e| ApiError::invalid(format!("tokenizer: {e}"), Some("prompt")))
}

/// Checks the shared parameters and the prompt, queues the request, and answers.
async fn start(
    st: &Arc<AppState>,
    kind: Kind,
    prompt: Vec<u32>,
    p: &Params,
    default_max: usize,
) -> Result<Response, ApiError> {
    if prompt.is_empty() {
        return Err(ApiError::invalid("the prompt is empty", Some("prompt")));
    }
    if let Some(&id) = prompt.iter().find(|&&t| t as usize >= st.vocab) {
        return Err(ApiError::invalid(
            format!("token id {id} is outside the vocabulary (size {})", st.vocab),
            Some("prompt"),
        ));
    }
    if prompt.len() >= st.context {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!(
                "the prompt of {} tokens leaves no room in the context of {} tokens",
                prompt.len(),
                st.context
            ),
            kind: "invalid_request_error",
            param: Some("prompt"),
            code: Some("context_length_exceeded"),
        });
    }
    if p.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("only `n` = 1 is supported", Some("n")));
    }
    let max_tokens = p.max_completion_tokens.or(p.max_tokens).map_or(default_max.max(1), |m| m as usize);
    if max_tokens == 0 || max_tokens > st.max_tokens_cap {
        return Err(ApiError::invalid(
            format!("`max_tokens` must be between 1 and {}", st.max_tokens_cap),
            Some("max_tokens"),
        ));
    }
    let temperature = p.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid("`temperature` must be between 0 and 2", Some("temperature")));
    }
    let top_p = p.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid("`top_p` must be in (0, 1]", Some("top_p")));
    }
    let stop = match &p.stop {
        None => vec![],
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) if v.len() <= 4 => v.clone(),
        Some(Stop::Many(_)) => return Err(ApiError::invalid("at most 4 stop strings", Some("stop"))),
    };
    let seed =
        p.seed.unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
    let sampling = Sampling { temperature, top_k: p.top_k.unwrap_or(0) as usize, top_p, seed };
    let (tx, rx) = unbounded_channel();
    let prompt_tokens = prompt.len();
    let req = Request { prompt, max_tokens, sampling, stop, events: tx, arrived: Instant::now() };
    st.engine.submit(req).map_err(|e| match e {
        SubmitError::QueueFull => ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "the request queue is full; retry later".into(),
            kind: "rate_limit_error",
            param: None,
            code: Some("queue_full"),
        },
        SubmitError::Stopped => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the engine has stopped".into(),
            kind: "server_error",
            param: None,
            code: None,
        },
    })?;
    let id = st.next_id.fetch_add(1, Ordering::Relaxed);
    let head = Head {
        id: match kind {
            Kind::Completion => format!("cmpl-{id}"),
            Kind::Chat => format!("chatcmpl-{id}"),
        },
        model: st.model_id.clone(),
        created: unix_now(),
        kind,
        token_ids: p.return_token_ids == Some(true),
        prompt_tokens,
    };
    match p.stream == Some(true) {
        true => Ok(stream(head, rx, p.stream_options.as_ref().and_then(|o| o.include_usage) == Some(true))),
        false => whole(head, rx).await,
    }
}

/// The fields every response and chunk repeats.
struct Head {
    id: String,
    model: String,
    created: u64,
    kind: Kind,
    token_ids: bool,
    prompt_tokens: usize,
}

impl Head {
    fn usage(&self, completion: usize) -> Value {
        json!({"prompt_tokens": self.prompt_tokens, "completion_tokens": completion, "total_tokens": self.prompt_tokens + completion})
    }

    /// A whole response, or a chunk of a stream (`finish` is `None` while tokens come).
    fn choice(&self, text: &str, ids: &[u32], finish: Option<&str>, chunk: bool, first: bool) -> Value {
        let mut c = match (self.kind, chunk) {
            (Kind::Completion, _) => json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish}),
            (Kind::Chat, false) => {
                json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": finish})
            }
            (Kind::Chat, true) => {
                let mut delta = json!({});
                if first {
                    delta["role"] = json!("assistant");
                }
                if !text.is_empty() || (first && finish.is_none()) {
                    delta["content"] = json!(text);
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
        };
        if self.token_ids {
            c["token_ids"] = json!(ids);
        }
        c
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Completion, _) => "text_completion",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
        }
    }

    fn envelope(&self, chunk: bool, choices: Vec<Value>) -> Value {
        json!({"id": self.id, "object": self.object(chunk), "created": self.created, "model": self.model, "choices": choices})
    }
}

async fn whole(head: Head, mut rx: UnboundedReceiver<Event>) -> Result<Response, ApiError> {
    let (mut text, mut ids) = (String::new(), Vec::new());
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Token { id, text: t } => {
                ids.push(id);
                text.push_str(&t);
            }
            Event::Done { finish_reason, completion_tokens, .. } => {
                let mut body =
                    head.envelope(false, vec![head.choice(&text, &ids, Some(finish_reason.as_str()), false, true)]);
                body["usage"] = head.usage(completion_tokens);
                return Ok(Json(body).into_response());
            }
            Event::Failed(reason) => return Err(server_error(reason)),
        }
    }
    Err(server_error("the engine dropped the request".into()))
}

fn server_error(message: String) -> ApiError {
    ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message, kind: "server_error", param: None, code: None }
}

/// What a stream still has to send.
struct StreamState {
    head: Head,
    rx: UnboundedReceiver<Event>,
    pending: VecDeque<String>,
    first: bool,
    ended: bool,
    include_usage: bool,
}

fn stream(head: Head, rx: UnboundedReceiver<Event>, include_usage: bool) -> Response {
    let state = StreamState { head, rx, pending: VecDeque::new(), first: true, ended: false, include_usage };
    let events = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(data) = s.pending.pop_front() {
                return Some((Ok::<_, Infallible>(SseEvent::default().data(data)), s));
            }
            if s.ended {
                return None;
            }
            match s.rx.recv().await {
                Some(Event::Token { id, text }) => {
                    if text.is_empty() && !s.head.token_ids && !s.first {
                        continue;
                    }
                    let c = s.head.choice(&text, &[id], None, true, s.first);
                    s.first = false;
                    s.pending.push_back(s.head.envelope(true, vec![c]).to_string());
                }
                Some(Event::Done { finish_reason, completion_tokens, .. }) => {
                    let c = s.head.choice("", &[], Some(finish_reason.as_str()), true, s.first);
                    s.pending.push_back(s.head.envelope(true, vec![c]).to_string());
                    if s.include_usage {
                        let mut u = s.head.envelope(true, vec![]);
                        u["usage"] = s.head.usage(completion_tokens);
                        s.pending.push_back(u.to_string());
                    }
                    s.pending.push_back("[DONE]".into());
                    s.ended = true;
                }
                Some(Event::Failed(reason)) => {
                    let err =
                        json!({"error": {"message": reason, "type": "server_error", "param": null, "code": null}});
                    s.pending.push_back(err.to_string());
                    s.pending.push_back("[DONE]".into());
                    s.ended = true;
                }
                None => {
                    s.ended = true;
                }
            }
        }
    });
    Sse::new(events).into_response()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
