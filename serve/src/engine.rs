//! # The engine: continuous batching on one thread
//!
//! The model and its slotted KV cache live on one OS thread (a GPU context is
//! never touched by the HTTP side). Requests arrive through a bounded channel;
//! at every token boundary the engine
//!
//! 1. admits waiting requests into free cache slots,
//! 2. drops sequences whose client went away (their event receiver is gone),
//! 3. runs one batched step: the next token of every decoding sequence, plus
//!    up to [`EngineConfig::prefill_chunk`] prompt tokens of sequences still
//!    being prefilled (so a long prompt never stalls the others for long),
//!    each prompt in pieces of that many tokens whatever else is prefilling,
//! 4. samples each sequence whose prompt is in, streams the token, and frees
//!    the slot of every sequence that finished.
//!
//! A row's logits do not depend on the rest of the batch
//! ([`BitNet::forward_batch`]), so a greedy request returns the same tokens
//! alone or among others.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use trinity_model::generate::{Sampler, Sampling, TextStream, Tokenizer};
use trinity_model::{BitNet, KvCache, SeqChunk};

use crate::metrics::Metrics;

/// How the engine batches.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Sequences decoding together (KV-cache slots).
    pub max_batch: usize,
    /// Tokens per slot (prompt and generation).
    pub context: usize,
    /// Requests that may wait for a slot before new ones get 429.
    pub max_queue: usize,
    /// Prompt tokens per batched step, over all sequences being prefilled;
    /// each prompt goes in pieces of this many tokens (the last one shorter),
    /// alone or among others.
    pub prefill_chunk: usize,
}

/// Why a sequence ended (OpenAI's `finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` or the context.
    Length,
}

impl FinishReason {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What the engine tells a request, in order: tokens, then one `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A generated token and the text it makes visible (possibly empty: text
    /// that may still turn into a stop string, or an incomplete character, is
    /// held back until a later token or the last one releases it).
    Token {
        /// The token id.
        id: u32,
        /// New visible text.
        text: String,
    },
    /// The sequence ended.
    Done {
        /// Why.
        finish_reason: FinishReason,
        /// Prompt tokens.
        prompt_tokens: usize,
        /// Generated tokens.
        completion_tokens: usize,
    },
    /// The engine could not run the sequence.
    Failed(String),
}

/// One generation request, checked by the HTTP side.
#[derive(Debug)]
pub struct Request {
    /// The prompt's token ids (non-empty, in the vocabulary, shorter than the context).
    pub prompt: Vec<u32>,
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// How tokens are chosen.
    pub sampling: Sampling,
    /// Stop strings: generation ends before the first of them.
    pub stop: Vec<String>,
    /// Where events go; dropping the receiver cancels the request.
    pub events: UnboundedSender<Event>,
    /// When the request arrived (time to first token counts from here).
    pub arrived: Instant,
}

/// Why a request was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full (429).
    QueueFull,
    /// The engine has stopped (503).
    Stopped,
}

/// The HTTP side's handle on the engine thread.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: SyncSender<Request>,
    metrics: Arc<Metrics>,
}

impl EngineHandle {
    /// Queues a request, or says why not.
    pub fn submit(&self, req: Request) -> Result<(), SubmitError> {
        self.metrics.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(req) {
            Ok(()) => {
                self.metrics.requests.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
                match e {
                    TrySendError::Full(_) => {
                        self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                        Err(SubmitError::QueueFull)
                    }
                    TrySendError::Disconnected(_) => Err(SubmitError::Stopped),
                }
            }
        }
    }
}

/// Starts the engine thread over `model`; it runs until every handle is dropped.
pub fn spawn(
    model: BitNet,
    tokenizer: Option<Arc<Tokenizer>>,
    eos: Vec<u32>,
    cfg: EngineConfig,
    metrics: Arc<Metrics>,
) -> std::io::Result<(EngineHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Request>(cfg.max_queue.max(1));
    let m = metrics.clone();
    let join = std::thread::Builder::new().name("trinity-engine".into()).spawn(move || {
        let mut engine = match Engine::new(model, tokenizer, eos, cfg, m) {
            Ok(e) => e,
            Err(reason) => {
                // Every request gets the reason: the cache could not be allocated.
                while let Ok(req) = rx.recv() {
                    let _ = req.events.send(Event::Failed(reason.clone()));
                }
                return;
            }
        };
        engine.run(&rx);
    })?;
    Ok((EngineHandle { tx, metrics }, join))
}

/// A sequence in a slot.
struct Seq {
    req: Request,
    slot: usize,
    /// Prompt tokens already in the cache.
    fed: usize,
    /// The token to run next (decode), once the prompt is in.
    next: Option<u32>,
    /// Tokens generated.
    generated: usize,
    sampler: Sampler,
    /// The generated ids as text, whole characters only until the last.
    stream: TextStream,
    /// The text `stream` gave so far.
    text: String,
    /// Bytes of `text` already sent.
    sent: usize,
}

struct Engine {
    model: BitNet,
    cache: KvCache,
    tokenizer: Option<Arc<Tokenizer>>,
    eos: Vec<u32>,
    cfg: EngineConfig,
    metrics: Arc<Metrics>,
    free: Vec<usize>,
    running: Vec<Seq>,
}

impl Engine {
    fn new(
        model: BitNet,
        tokenizer: Option<Arc<Tokenizer>>,
        eos: Vec<u32>,
        cfg: EngineConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Engine, String> {
        let cache = model.new_batch_cache(cfg.max_batch, cfg.context).map_err(|e| format!("KV cache: {e}"))?;
        let free = (0..cfg.max_batch).rev().collect();
        Ok(Engine { model, cache, tokenizer, eos, cfg, metrics, free, running: Vec::new() })
    }

    fn run(&mut self, rx: &Receiver<Request>) {
        loop {
            // Admit: block only when nothing runs.
            while !self.free.is_empty() {
                let req = match self.running.is_empty() {
                    true => match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(r) => r,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => return,
                    },
                    false => match rx.try_recv() {
                        Ok(r) => r,
                        Err(_) => break,
                    },
                };
                self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
                if req.events.is_closed() {
                    self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let slot = self.free.pop().expect("a free slot");
                self.cache.clear(slot);
                let sampler = Sampler::new(req.sampling);
                self.running.push(Seq {
                    req,
                    slot,
                    fed: 0,
                    next: None,
                    generated: 0,
                    sampler,
                    stream: TextStream::default(),
                    text: String::new(),
                    sent: 0,
                });
            }
            // Clients that went away free their slots now.
            let before = self.running.len();
            let free = &mut self.free;
            self.running.retain(|s| {
                let open = !s.req.events.is_closed();
                if !open {
                    free.push(s.slot);
                }
                open
            });
            self.metrics.cancelled.fetch_add((before - self.running.len()) as u64, Ordering::Relaxed);
            self.metrics.running.store(self.running.len() as u64, Ordering::Relaxed);
            if self.running.is_empty() {
                continue;
            }
            self.step();
        }
    }

    /// One batched forward pass and what follows from it.
    fn step(&mut self) {
        let pieces = prompt_pieces(
            self.running.iter().map(|s| (s.next.is_none(), s.req.prompt.len() - s.fed)),
            self.cfg.prefill_chunk,
        );
        let mut rows: Vec<(usize, Vec<u32>)> = Vec::with_capacity(self.running.len());
        for ((i, s), n) in self.running.iter().enumerate().zip(pieces) {
            match (s.next, n) {
                (Some(t), _) => rows.push((i, vec![t])),
                (None, 0) => {} // its piece waits for the next step
                (None, n) => rows.push((i, s.req.prompt[s.fed..s.fed + n].to_vec())),
            }
        }
        let chunks: Vec<SeqChunk> =
            rows.iter().map(|(i, t)| SeqChunk { slot: self.running[*i].slot, tokens: t }).collect();
        // Greedy rows take the device's argmax; the logits come back only when some row samples.
        let with_logits = rows.iter().any(|(i, _)| self.running[*i].req.sampling.temperature > 0.0);
        let t0 = Instant::now();
        let result = self.model.step(&mut self.cache, &chunks, with_logits);
        self.metrics.busy_ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.metrics.steps.fetch_add(1, Ordering::Relaxed);
        self.metrics.last_step_rows.store(rows.iter().map(|r| r.1.len() as u64).sum(), Ordering::Relaxed);
        let trinity_model::StepOutput { greedy: greedy_ids, logits } = match result {
            Ok(r) => r,
            Err(e) => {
                // Not expected (requests are checked before they queue); fail the step's sequences.
                let failed: Vec<usize> = rows.iter().map(|r| r.0).collect();
                for &i in failed.iter().rev() {
                    let s = self.running.remove(i);
                    let _ = s.req.events.send(Event::Failed(format!("forward pass: {e}")));
                    self.free.push(s.slot);
                }
                return;
            }
        };
        let mut done = Vec::new();
        for (k, (i, tokens)) in rows.iter().enumerate() {
            let s = &mut self.running[*i];
            if s.next.is_none() {
                s.fed += tokens.len();
                self.metrics.prompt_tokens.fetch_add(tokens.len() as u64, Ordering::Relaxed);
                if s.fed < s.req.prompt.len() {
                    continue; // more prompt to come: these logits choose nothing
                }
            }
            let id = match (&logits, s.req.sampling.temperature > 0.0) {
                (Some(rows), true) => s.sampler.sample(&rows[k]),
                _ => greedy_ids[k],
            };
            if s.generated == 0 {
                self.metrics.observe_ttft(s.req.arrived.elapsed().as_secs_f64());
            }
            s.generated += 1;
            self.metrics.generated_tokens.fetch_add(1, Ordering::Relaxed);
            let finish = if self.eos.contains(&id) {
                Some(FinishReason::Stop)
            } else if s.generated >= s.req.max_tokens || self.cache.slot_len(s.slot) + 1 > self.cache.context() {
                Some(FinishReason::Length)
            } else {
                None
            };
            let (text, stopped) = match visible_text(self.tokenizer.as_deref(), s, id, finish.is_some()) {
                Ok(t) => t,
                Err(e) => {
                    // Text the client would never see is a failure, not an empty string.
                    let _ = s.req.events.send(Event::Failed(format!("decoding token {id}: {e}")));
                    done.push((*i, false));
                    continue;
                }
            };
            let finish = if stopped { Some(FinishReason::Stop) } else { finish };
            let _ = s.req.events.send(Event::Token { id, text });
            match finish {
                Some(reason) => {
                    let _ = s.req.events.send(Event::Done {
                        finish_reason: reason,
                        prompt_tokens: s.req.prompt.len(),
                        completion_tokens: s.generated,
                    });
                    done.push((*i, true));
                }
                None => s.next = Some(id),
            }
        }
        done.sort_unstable();
        for &(i, finished) in done.iter().rev() {
            let s = self.running.remove(i);
            self.free.push(s.slot);
            self.metrics.finished.fetch_add(finished as u64, Ordering::Relaxed);
        }
        self.metrics.running.store(self.running.len() as u64, Ordering::Relaxed);
    }
}

/// The text to send now that `id` is generated, and whether a stop string
/// ended the sequence. Text that could still become a stop string, or ends
/// in an incomplete character ([`TextStream`] holds that back), waits unless
/// `last`. An error is the tokenizer's, decoding the ids since the last text.
fn visible_text(
    tokenizer: Option<&Tokenizer>,
    s: &mut Seq,
    id: u32,
    last: bool,
) -> Result<(String, bool), trinity_model::ModelError> {
    let Some(t) = tokenizer else { return Ok((String::new(), false)) };
    s.text += &s.stream.push(t, id)?;
    if last {
        s.text += &s.stream.finish(t)?;
    }
    let (end, stopped) = release_point(&s.text, &s.req.stop, last);
    let text = s.text.get(s.sent..end).unwrap_or_default().to_owned();
    s.sent = s.sent.max(end);
    Ok((text, stopped))
}

/// How much of `full` may be released: up to the first stop string (which
/// ends the sequence), else all but a tail that is a prefix of a stop string
/// — everything when `last`.
pub fn release_point(full: &str, stop: &[String], last: bool) -> (usize, bool) {
    if let Some(at) = stop.iter().filter(|s| !s.is_empty()).filter_map(|s| full.find(s.as_str())).min() {
        return (at, true);
    }
    if last {
        return (full.len(), false);
    }
    let mut end = full.len();
    for s in stop {
        // The longest proper prefix of `s` that `full` ends with.
        for (k, _) in s.char_indices().skip(1) {
            if full.ends_with(&s[..k]) {
                end = end.min(full.len() - k);
            }
        }
    }
    (end, false)
}

/// The prompt tokens one step feeds each running sequence, given whether it
/// is still prefilling and how much of its prompt is left: a prompt goes in
/// pieces of `prefill_chunk` tokens (the last one shorter), in arrival order,
/// while they fit in the step's `prefill_chunk`; a piece that does not fit
/// waits for the next step (the first always fits). The pieces of a prompt
/// are thus the same alone or among others, and so are its logits: the CPU's
/// attention rounds a row by its own chunk (a long chunk takes the prefill
/// blocks), so a prompt cut where another's ended could round differently.
fn prompt_pieces(seqs: impl Iterator<Item = (bool, usize)>, prefill_chunk: usize) -> Vec<usize> {
    let chunk = prefill_chunk.max(1);
    let mut budget = chunk;
    seqs.map(|(prefilling, left)| {
        let n = if prefilling { left.min(chunk) } else { 0 };
        if n > budget {
            return 0;
        }
        budget -= n;
        n
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_go_in_whole_pieces_whatever_else_prefills() {
        // (prefilling, prompt left); chunk 4: a decoding sequence takes none,
        // the first prompt its piece of 4, the next waits (the budget is spent).
        assert_eq!(prompt_pieces([(false, 0), (true, 10), (true, 6)].into_iter(), 4), [0, 4, 0]);
        // A last piece of 1 leaves 3: the next prompt's piece of 4 waits, not cut to 3;
        // shorter ones behind it fit while the budget lasts.
        assert_eq!(
            prompt_pieces([(true, 1), (true, 6), (true, 2), (true, 1), (true, 1)].into_iter(), 4),
            [1, 0, 2, 1, 0]
        );
        // Alone, every step: 4, 4, 2 for a prompt of 10.
        assert_eq!(prompt_pieces([(true, 10)].into_iter(), 4), [4]);
        assert_eq!(prompt_pieces([(true, 2)].into_iter(), 4), [2]);
        // A chunk of 0 is taken as 1.
        assert_eq!(prompt_pieces([(true, 3), (true, 3)].into_iter(), 0), [1, 0]);
    }

    fn stops(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn stop_strings_cut_and_hold_back() {
        assert_eq!(release_point("hello wor", &stops(&["world"]), false), (6, false));
        assert_eq!(release_point("hello world!", &stops(&["world"]), false), (6, true));
        assert_eq!(release_point("hello wor", &stops(&["world"]), true), (9, false));
        assert_eq!(release_point("abc", &stops(&["x", "bcd"]), false), (1, false));
        assert_eq!(release_point("stop here", &stops(&["here", "stop"]), false), (0, true));
        assert_eq!(release_point("plain", &[], false), (5, false));
    }
}
