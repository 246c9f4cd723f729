//! # Sampling and generation
//!
//! [`Sampling`]: greedy (`temperature` 0: the first index of the largest
//! logit, as `torch.argmax`), or temperature with optional top-k and top-p
//! (nucleus) from a seeded generator. [`generate`] runs the prompt as one
//! prefill, then one token per decode step from the KV cache, and stops at an
//! end-of-sequence id, at `max_tokens`, at the context, or when its caller
//! says so (a streamed reply whose reader went away).

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::bitnet::BitNet;
use crate::error::{ModelError, ModelResult};

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 is greedy.
    pub temperature: f32,
    /// Keep the `k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `p` (1: all).
    pub top_p: f32,
    /// Seed of the generator.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

/// The index of the largest logit (the first on ties; NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// A stateful sampler.
#[derive(Debug)]
pub struct Sampler {
    cfg: Sampling,
    rng: StdRng,
}

impl Sampler {
    /// A sampler seeded from `cfg.seed`.
    pub fn new(cfg: Sampling) -> Self {
        Sampler { cfg, rng: StdRng::seed_from_u64(cfg.seed) }
    }

    /// Chooses a token.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.cfg.temperature <= 0.0 {
            return argmax(logits);
        }
        let mut idx: Vec<usize> = (0..logits.len()).filter(|&i| logits[i].is_finite()).collect();
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if self.cfg.top_k > 0 {
            idx.truncate(self.cfg.top_k);
        }
        if idx.is_empty() {
            return argmax(logits);
        }
        let max = logits[idx[0]] as f64;
        let mut probs: Vec<f64> =
            idx.iter().map(|&i| ((logits[i] as f64 - max) / self.cfg.temperature as f64).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.cfg.top_p < 1.0 {
            let mut cum = 0.0;
            let keep = probs
                .iter()
                .position(|&p| {
                    cum += p;
                    cum >= self.cfg.top_p as f64
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
            idx.truncate(keep);
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        let mut u: f64 = self.rng.random();
        for (p, &i) in probs.iter().zip(&idx) {
            if u < *p {
                return i as u32;
            }
            u -= p;
        }
        idx[idx.len() - 1] as u32
    }
}

/// Why [`generate`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// An end-of-sequence id came (it is the last new id).
    Eos,
    /// `max_tokens` new ids.
    MaxTokens,
    /// The KV cache reached the model's context.
    Context,
    /// `on_token` returned [`ControlFlow::Break`].
    Caller,
}

impl Stop {
    /// Its name in `trinity generate`'s JSON (`"stop"`).
    pub fn name(self) -> &'static str {
        match self {
            Stop::Eos => "eos",
            Stop::MaxTokens => "max_tokens",
            Stop::Context => "context",
            Stop::Caller => "caller",
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What [`generate`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The new token ids.
    pub new_ids: Vec<u32>,
    /// Why it stopped.
    pub stop: Stop,
    /// Prompt tokens per second of the prefill.
    pub prefill_tokens_per_s: f64,
    /// Generated tokens per second of the decode steps; `None` when none ran
    /// (at most one new token: the first comes from the prefill).
    pub decode_tokens_per_s: Option<f64>,
}

/// Generates up to `max_tokens` after `prompt`; `on_token` sees each new id
/// as it comes and ends the generation after that id by returning
/// [`ControlFlow::Break`] (no step is spent on tokens nobody will read).
pub fn generate(
    model: &BitNet,
    prompt: &[u32],
    max_tokens: usize,
    sampling: Sampling,
    eos: &[u32],
    mut on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> ModelResult<Generation> {
    let context = model.config.max_position_embeddings;
    if prompt.is_empty() {
        return Err(ModelError::EmptyPrompt);
    }
    if prompt.len() > context {
        return Err(ModelError::ContextExceeded { what: "the prompt", len: prompt.len(), context });
    }
    let mut cache = model.new_cache(context)?;
    let mut sampler = Sampler::new(sampling);
    // Greedy picks on the device (only the id comes back); sampling needs the logits.
    let mut next_after = |tokens: &[u32], cache: &mut crate::KvCache| -> ModelResult<u32> {
        if sampling.temperature <= 0.0 {
            let chunk = crate::SeqChunk { slot: 0, tokens };
            return Ok(model.step(cache, &[chunk], false)?.greedy[0]);
        }
        Ok(sampler.sample(&model.forward(tokens, cache, false)?.pop().expect("one row")))
    };
    let t0 = Instant::now();
    let mut next = next_after(prompt, &mut cache)?;
    let prefill = t0.elapsed().as_secs_f64();
    let mut new_ids = Vec::new();
    let t1 = Instant::now();
    let stop = loop {
        if new_ids.len() >= max_tokens {
            break Stop::MaxTokens;
        }
        new_ids.push(next);
        if on_token(next).is_break() {
            break Stop::Caller;
        }
        if eos.contains(&next) {
            break Stop::Eos;
        }
        if new_ids.len() >= max_tokens {
            break Stop::MaxTokens;
        }
        if cache.len() >= cache.context() {
            break Stop::Context;
        }
        next = next_after(&[next], &mut cache)?;
    };
    let decode = t1.elapsed().as_secs_f64();
    // Every new token after the first took one decode step.
    let decode_steps = new_ids.len().saturating_sub(1);
    Ok(Generation {
        new_ids,
        stop,
        prefill_tokens_per_s: prompt.len() as f64 / prefill.max(1e-9),
        decode_tokens_per_s: (decode_steps > 0).then(|| decode_steps as f64 / decode.max(1e-9)),
    })
}

/// The checkpoint's `tokenizer.json`, and its chat template when
/// `tokenizer_config.json` ships one.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: std::path::PathBuf,
    chat: Option<ChatTemplate>,
}

/// A chat template (Jinja) with the special tokens it may name.
#[derive(Debug, Clone)]
struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
    path: std::path::PathBuf,
}

/// A special token in `tokenizer_config.json`: a string or `{"content": …}`.
fn token_text(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(o) => o.get("content").and_then(|c| c.as_str()).unwrap_or_default().to_owned(),
        None => String::new(),
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("path", &self.path).finish()
    }
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json`.
    pub fn load(dir: &Path) -> ModelResult<Tokenizer> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| ModelError::Tokenizer { path: path.clone(), reason: e.to_string() })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let chat = match std::fs::read_to_string(&cfg_path) {
            Err(_) => None,
            Ok(text) => {
                let v: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|source| ModelError::Json { path: cfg_path.clone(), source })?;
                v.get("chat_template").and_then(|t| t.as_str()).map(|t| ChatTemplate {
                    source: t.to_owned(),
                    bos_token: token_text(v.get("bos_token")),
                    eos_token: token_text(v.get("eos_token")),
                    path: cfg_path.clone(),
                })
            }
        };
        Ok(Tokenizer { inner, path, chat })
    }

    /// Whether the checkpoint ships a chat template.
    pub fn has_chat_template(&self) -> bool {
        self.chat.is_some()
    }

    /// Renders one user message through the chat template, ready for the
    /// assistant's answer (`add_generation_prompt`).
    pub fn apply_chat_template(&self, user: &str) -> ModelResult<String> {
        self.render_chat(&[("user", user)])
    }

    /// Renders a conversation (`(role, content)` pairs) through the chat
    /// template, ready for the assistant's answer (`add_generation_prompt`).
    pub fn render_chat(&self, messages: &[(&str, &str)]) -> ModelResult<String> {
        let Some(t) = &self.chat else {
            return Err(ModelError::Tokenizer {
                path: self.path.with_file_name("tokenizer_config.json"),
                reason: "no chat_template in tokenizer_config.json".into(),
            });
        };
        let err =
            |e: minijinja::Error| ModelError::Tokenizer { path: t.path.clone(), reason: format!("chat_template: {e}") };
        let mut env = minijinja::Environment::new();
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", &t.source).map_err(err)?;
        let ctx = minijinja::context! {
            messages => messages
                .iter()
                .map(|&(role, content)| minijinja::context! { role => role, content => content })
                .collect::<Vec<_>>(),
            add_generation_prompt => true,
            bos_token => t.bos_token.clone(),
            eos_token => t.eos_token.clone(),
        };
        env.get_template("chat").and_then(|tpl| tpl.render(ctx)).map_err(err)
    }

    /// Text → ids without adding special tokens (for text the chat template already framed).
    pub fn encode_plain(&self, text: &str) -> ModelResult<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer { path: self.path.clone(), reason: e.to_string() })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text → ids (with the tokenizer's own special tokens, e.g. BOS).
    pub fn encode(&self, text: &str) -> ModelResult<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| ModelError::Tokenizer { path: self.path.clone(), reason: e.to_string() })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids → text (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> ModelResult<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenizer { path: self.path.clone(), reason: e.to_string() })
    }

    /// The end-of-sequence ids: the config's `eos_token_id`, and the usual
    /// end tokens (`</s>`, `<|end_of_text|>`, `<|eot_id|>`) the vocabulary has.
    pub fn eos_ids(&self, config: &crate::config::ModelConfig) -> Vec<u32> {
        let mut eos = config.eos_token_ids.clone();
        for id in ["</s>", "<|end_of_text|>", "<|eot_id|>"].iter().filter_map(|s| self.token_id(s)) {
            if !eos.contains(&id) {
                eos.push(id);
            }
        }
        eos
    }

    /// The id of a token string, when the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// Generated ids to text as they arrive, for streaming. Each
/// [`push`](TextStream::push) decodes only the ids since the last text it
/// returned, plus the chunk before them as context, not the whole generation
/// (which costs O(n) per token, O(n²) in all). The context keeps the spaces a
/// decoder puts between tokens (WordLevel's joins, SentencePiece's `▁`).
///
/// Text that ends inside a multi-byte character waits for the ids that
/// complete it: byte-level vocabularies (Llama 3's, and so 2B-4T's) cut one
/// character across tokens, and the first half alone decodes as U+FFFD.
/// [`finish`](TextStream::finish) returns whatever still waits.
#[derive(Debug, Default, Clone)]
pub struct TextStream {
    ids: Vec<u32>,
    /// Start of the ids decoded as context for the new ones.
    context: usize,
    /// End of the ids whose text has been returned.
    returned: usize,
}

impl TextStream {
    /// The text `id` adds: empty while it waits for the rest of a character
    /// (or `id` is a special token, which decodes to nothing).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> ModelResult<String> {
        self.ids.push(id);
        let new = self.pending(tokenizer)?;
        if new.is_empty() || new.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        self.context = self.returned;
        self.returned = self.ids.len();
        Ok(new)
    }

    /// The text still waiting (an incomplete last character, as U+FFFD).
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> ModelResult<String> {
        let new = self.pending(tokenizer)?;
        self.context = self.returned;
        self.returned = self.ids.len();
        Ok(new)
    }

    /// The text of the ids after `returned`, in the context of the chunk before them.
    fn pending(&self, tokenizer: &Tokenizer) -> ModelResult<String> {
        let before = tokenizer.decode(&self.ids[self.context..self.returned])?;
        let now = tokenizer.decode(&self.ids[self.context..])?;
        // Decoders extend the text they gave (the context only fixes the
        // join); should one rewrite it, what differs from the common start is
        // the new text rather than nothing at all.
        let same = before
            .char_indices()
            .zip(now.chars())
            .find(|&((_, a), b)| a != b)
            .map_or(before.len().min(now.len()), |((i, _), _)| i);
        Ok(now[same..].to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_keep_their_json_names() {
        let names =
            [(Stop::Eos, "eos"), (Stop::MaxTokens, "max_tokens"), (Stop::Context, "context"), (Stop::Caller, "caller")];
        for (stop, name) in names {
            assert_eq!((stop.name(), stop.to_string()), (name, name.to_owned()));
        }
    }

    /// The byte-level BPE tokenizer of scripts/make-byte-level-tokenizer.py:
    /// no merges, a token per byte in GPT-2's alphabet (as Llama 3's
    /// vocabulary spells bytes), loaded as a checkpoint's is.
    fn byte_level_tokenizer() -> Tokenizer {
        let dir = std::env::temp_dir().join(format!("trinity-byte-level-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/byte-level-tokenizer.json");
        std::fs::copy(fixture, dir.join("tokenizer.json")).unwrap();
        let loaded = Tokenizer::load(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        loaded
    }

    fn stream_all(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
        let mut stream = TextStream::default();
        let mut pieces: Vec<String> = ids.iter().map(|&id| stream.push(t, id).unwrap()).collect();
        pieces.push(stream.finish(t).unwrap());
        pieces
    }

    #[test]
    fn streamed_text_waits_for_whole_characters() {
        let t = byte_level_tokenizer();
        let text = "héllo wörld 😀 日本, ok";
        let ids = t.encode_plain(text).unwrap();
        assert_eq!(ids.len(), text.len(), "a token per byte");
        let pieces = stream_all(&t, &ids);
        assert_eq!(pieces.concat(), text);
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
        // 'h', then 'é' once both of its bytes are in; the emoji's four
        // bytes give "", "", "", "😀".
        assert_eq!((pieces[0].as_str(), pieces[1].as_str(), pieces[2].as_str()), ("h", "", "é"));
        let at = text.find('😀').unwrap();
        assert_eq!(pieces[at..at + 4], ["", "", "", "😀"]);
        // A generation that ends inside a character ends with its U+FFFD.
        let cut = t.encode_plain("aé").unwrap();
        assert_eq!(stream_all(&t, &cut[..2]), ["a", "", "\u{FFFD}"]);
    }

    #[test]
    fn streamed_text_keeps_the_decoders_joins() {
        // The fixtures' WordLevel tokenizer joins words with spaces and skips
        // its special tokens (0–2).
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-bitlinear-f32");
        let t = Tokenizer::load(&dir).unwrap();
        let mut rng = StdRng::seed_from_u64(11);
        for len in [1, 2, 7, 40] {
            let ids: Vec<u32> = (0..len).map(|_| rng.random_range(0..64)).collect();
            let pieces = stream_all(&t, &ids);
            assert_eq!(pieces.concat(), t.decode(&ids).unwrap(), "{ids:?} → {pieces:?}");
        }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0]), 1);
        let mut s = Sampler::new(Sampling::default());
        assert_eq!(s.sample(&[0.0, 0.5, 0.1]), 1);
    }

    #[test]
    fn top_k_1_is_greedy_and_seeds_repeat() {
        let logits = [0.1f32, 2.0, 1.9, -5.0];
        let mut s = Sampler::new(Sampling { temperature: 1.0, top_k: 1, top_p: 1.0, seed: 3 });
        assert!((0..20).all(|_| s.sample(&logits) == 1));
        let run = |seed| {
            let mut s = Sampler::new(Sampling { temperature: 1.0, top_k: 0, top_p: 1.0, seed });
            (0..50).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert!(run(7).contains(&2), "temperature 1 samples the runner-up too");
        assert!(!run(7).contains(&3) || run(7).iter().filter(|&&t| t == 3).count() < 3);
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // Probabilities ≈ 0.64, 0.24, 0.09, 0.03: top_p 0.5 keeps only the first.
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let mut s = Sampler::new(Sampling { temperature: 1.0, top_k: 0, top_p: 0.5, seed: 1 });
        assert!((0..50).all(|_| s.sample(&logits) == 0));
    }
}
