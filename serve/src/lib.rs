//! # `trinity serve`: an OpenAI-compatible server with continuous batching
//!
//! - [`engine`]: the model on its own thread; sequences join and leave the
//!   running batch at token boundaries, each in its own KV-cache slot, and
//!   every step runs all of them through the weights once.
//! - [`http`]: `POST /v1/completions`, `POST /v1/chat/completions` (whole or
//!   streamed as server-sent events), `GET /v1/models`, `/health`, `/metrics`,
//!   on axum; the handlers talk to the engine through a bounded channel.
//! - [`api`]: the request bodies and OpenAI's error object.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use trinity_serve::{ServeOptions, Server};
//! let dir = std::path::Path::new("model/tests/fixtures/hf-bitlinear-f32");
//! let model = trinity_model::BitNet::load(dir, &trinity::Device::Cpu)?;
//! let tokenizer = trinity_model::generate::Tokenizer::load(dir).ok();
//! let server = Server::start(model, tokenizer, ServeOptions::new("tiny")).await?;
//! println!("listening on {}", server.local_addr());
//! server.run().await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod engine;
pub mod http;
pub mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use trinity_model::BitNet;
use trinity_model::generate::Tokenizer;

pub use engine::{EngineConfig, Event, FinishReason};
pub use metrics::Metrics;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// An option is out of range.
    #[error("{0}")]
    Options(String),
    /// The engine thread could not be started.
    #[error("cannot start the engine thread: {0}")]
    Engine(std::io::Error),
    /// Serving failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The model id clients name (`/v1/models` lists it).
    pub model_id: String,
    /// Address to bind (127.0.0.1 unless told otherwise).
    pub host: String,
    /// Port (0: any free one).
    pub port: u16,
    /// Sequences decoding together.
    pub max_batch: usize,
    /// Tokens per sequence (capped at the model's `max_position_embeddings`).
    pub context: usize,
    /// Requests that may wait for a slot before 429.
    pub max_queue: usize,
    /// Prompt tokens per batched step.
    pub prefill_chunk: usize,
    /// The largest `max_tokens` accepted (default: the context).
    pub max_tokens_cap: Option<usize>,
    /// Request bodies above this many bytes get 413.
    pub max_body_bytes: usize,
    /// Bearer token required on `/v1/*`.
    pub api_key: Option<String>,
}

impl ServeOptions {
    /// Defaults: 127.0.0.1:8080, batch 8, context 2048, queue 64, prefill chunk 128, 1 MiB bodies.
    pub fn new(model_id: impl Into<String>) -> Self {
        ServeOptions {
            model_id: model_id.into(),
            host: "127.0.0.1".into(),
            port: 8080,
            max_batch: 8,
            context: 2048,
            max_queue: 64,
            prefill_chunk: 128,
            max_tokens_cap: None,
            max_body_bytes: 1 << 20,
            api_key: None,
        }
    }
}

/// A bound server; [`Server::run`] serves until the process ends.
pub struct Server {
    listener: tokio::net::TcpListener,
    router: axum::Router,
    state: Arc<http::AppState>,
}

impl Server {
    /// Starts the engine over `model` and binds the address.
    pub async fn start(model: BitNet, tokenizer: Option<Tokenizer>, opts: ServeOptions) -> Result<Server, ServeError> {
        if opts.max_batch == 0 || opts.context < 2 || opts.prefill_chunk == 0 {
            return Err(ServeError::Options(
                "--max-batch and --prefill-chunk must be at least 1, --ctx at least 2".into(),
            ));
        }
        let context = opts.context.min(model.config.max_position_embeddings);
        let tokenizer = tokenizer.map(Arc::new);
        let eos = match &tokenizer {
            Some(t) => t.eos_ids(&model.config),
            None => model.config.eos_token_ids.clone(),
        };
        let vocab = model.config.vocab;
        let metrics = Arc::new(Metrics::default());
        let cfg = EngineConfig {
            max_batch: opts.max_batch,
            context,
            max_queue: opts.max_queue,
            prefill_chunk: opts.prefill_chunk,
        };
        let (engine, _join) =
            engine::spawn(model, tokenizer.clone(), eos, cfg, metrics.clone()).map_err(ServeError::Engine)?;
        let addr = format!("{}:{}", opts.host, opts.port);
        let listener =
            tokio::net::TcpListener::bind(&addr).await.map_err(|source| ServeError::Bind { addr, source })?;
        let state = Arc::new(http::AppState {
            engine,
            tokenizer,
            model_id: opts.model_id,
            vocab,
            context,
            max_tokens_cap: opts.max_tokens_cap.unwrap_or(context),
            api_key: opts.api_key,
            metrics,
            next_id: AtomicU64::new(1),
        });
        let router = http::router(state.clone(), opts.max_body_bytes);
        Ok(Server { listener, router, state })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The server's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.state.metrics.clone()
    }

    /// Serves until the process ends.
    pub async fn run(self) -> Result<(), ServeError> {
        axum::serve(no_delay(self.listener), self.router).await.map_err(ServeError::Io)
    }

    /// Serves until `shutdown` completes.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        axum::serve(no_delay(self.listener), self.router).with_graceful_shutdown(shutdown).await.map_err(ServeError::Io)
    }
}

/// The listener with Nagle's algorithm off on every connection it accepts: a
/// streamed token is a small write, and with Nagle on it waits for the ACK of
/// the write before it (the response head), which the client's delayed ACK
/// holds back ~40 ms, so every stream's first token came ~40 ms late.
fn no_delay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        // Not fatal: the connection still works, only with Nagle's delays.
        if let Err(e) = tcp.set_nodelay(true) {
            eprintln!("warning: TCP_NODELAY not set on a connection: {e}");
        }
    })
}

#[cfg(test)]
mod tests {
    use axum::serve::Listener;

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = super::no_delay(listener);
        let client = tokio::spawn(tokio::net::TcpStream::connect(addr));
        let (server_side, _) = listener.accept().await;
        assert!(server_side.nodelay().unwrap(), "TCP_NODELAY is off on an accepted connection");
        client.await.unwrap().unwrap();
    }
}
