//! The OpenAI request bodies this server reads, and its error object.
//!
//! Unknown fields are ignored (clients send many); a known field of the wrong
//! type is a 400 naming the field (`serde_path_to_error`).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// The model id (must be the served one when given).
    pub model: Option<String>,
    /// A string, a list of token ids, or a list holding one of those.
    pub prompt: Prompt,
    /// Not supported when true.
    pub echo: Option<bool>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The model id (must be the served one when given).
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<Message>,
}

/// The fields both endpoints share (parsed from the same body on their own,
/// so an error names its field).
#[derive(Debug, Deserialize)]
pub struct Params {
    /// The most tokens to generate.
    pub max_tokens: Option<u64>,
    /// The newer name of `max_tokens` (chat).
    pub max_completion_tokens: Option<u64>,
    /// 0 is greedy; at most 2.
    pub temperature: Option<f32>,
    /// Nucleus sampling, in (0, 1].
    pub top_p: Option<f32>,
    /// Keep the `k` most likely tokens (an extension; 0 or absent: all).
    pub top_k: Option<u32>,
    /// The sampler's seed.
    pub seed: Option<u64>,
    /// A stop string or up to four.
    pub stop: Option<Stop>,
    /// Choices per request: only 1.
    pub n: Option<u64>,
    /// Server-sent events.
    pub stream: Option<bool>,
    /// `{"include_usage": true}` adds a last chunk with the usage.
    pub stream_options: Option<StreamOptions>,
    /// Adds `token_ids` (the generated ids) to each choice (an extension).
    pub return_token_ids: Option<bool>,
}

/// `stream_options`.
#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    /// A last chunk with the usage.
    pub include_usage: Option<bool>,
}

/// A completion prompt.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// Text.
    Text(String),
    /// Token ids.
    Ids(Vec<u32>),
    /// Several texts (only one is accepted).
    Texts(Vec<String>),
    /// Several id lists (only one is accepted).
    IdLists(Vec<Vec<u32>>),
}

/// `stop`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// A chat message.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`...
    pub role: String,
    /// Text, or a list of parts whose `text` fields are joined.
    pub content: Content,
}

/// Chat message content.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts (`{"type": "text", "text": ...}`).
    Parts(Vec<Part>),
}

/// A content part.
#[derive(Debug, Deserialize)]
pub struct Part {
    /// Only `text` is accepted.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub text: Option<String>,
}

/// Parses a request body: malformed JSON and wrong types are 400s that say where.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "malformed JSON",
            _ => "invalid request",
        };
        let message = match path.as_str() {
            "." | "" => format!("{what}: {inner}"),
            p => format!("{what}: `{p}`: {inner}"),
        };
        ApiError::invalid(message, None)
    })
}

/// An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, ...
    pub kind: &'static str,
    /// The offending field.
    pub param: Option<&'static str>,
    /// A machine-readable code.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 `invalid_request_error`.
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "message": self.message, "type": self.kind, "param": self.param, "code": self.code }
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
        }
        resp
    }
}
