//! `trinity serve` driven over real HTTP on 127.0.0.1 (a free port), with the
//! committed tiny fixtures: exact greedy tokens (against transformers' own,
//! and alone versus among 15 concurrent others), streaming parsed chunk by
//! chunk, bad input, authentication, a full queue, a client that goes away,
//! and a bounded load test that checks every response.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use trinity::Device;
use trinity_model::BitNet;
use trinity_model::generate::Tokenizer;
use trinity_serve::{ServeOptions, Server};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures").join(name)
}

fn expected(name: &str) -> (Vec<u32>, Vec<u32>) {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name).join("expected.json")).unwrap()).unwrap();
    let ids = |k: &str| v[k].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    (ids("prompt_ids"), ids("greedy_ids"))
}

/// Starts a server over fixture `name` on a free port; returns its base URL.
async fn start_fixture(name: &str, tweak: impl FnOnce(&mut ServeOptions)) -> String {
    let dir = fixture(name);
    let model = BitNet::load(&dir, &Device::Cpu).unwrap();
    let tokenizer = Tokenizer::load(&dir).unwrap();
    let mut opts = ServeOptions::new("tiny");
    opts.port = 0;
    opts.context = 32;
    tweak(&mut opts);
    start(model, Some(tokenizer), opts).await
}

async fn start(model: BitNet, tokenizer: Option<Tokenizer>, opts: ServeOptions) -> String {
    let server = Server::start(model, tokenizer, opts).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    tokio::spawn(server.run());
    base
}

/// A random model big enough that a long request takes a while (seconds for thousands of tokens).
fn slow_model() -> BitNet {
    let mut c = trinity_model::config::shape("bitnet_b1_58-large").unwrap();
    (c.hidden, c.intermediate, c.layers, c.heads, c.kv_heads, c.head_dim, c.vocab) = (256, 512, 4, 4, 4, 64, 1000);
    c.max_position_embeddings = 4096;
    BitNet::random(c, &Device::Cpu, 5).unwrap()
}

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(format!("{base}{path}")).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn ids_of(v: &Value) -> Vec<u32> {
    v["choices"][0]["token_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// A streamed request, parsed event by event: (text, token ids, finish reason, saw `[DONE]`).
async fn stream(base: &str, path: &str, body: Value) -> (String, Vec<u32>, String, bool) {
    let r = reqwest::Client::new().post(format!("{base}{path}")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut bytes = r.bytes_stream();
    let (mut buf, mut text, mut ids, mut finish, mut done) =
        (String::new(), String::new(), vec![], String::new(), false);
    while let Some(chunk) = bytes.next().await {
        buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let data = event.trim().strip_prefix("data: ").expect("every event is a data line");
            assert!(!done, "nothing may follow [DONE]");
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let v: Value = serde_json::from_str(data).unwrap();
            let Some(c) = v["choices"].as_array().and_then(|c| c.first()) else { continue };
            let piece = if path.contains("chat") { &c["delta"]["content"] } else { &c["text"] };
            text.push_str(piece.as_str().unwrap_or(""));
            if let Some(t) = c["token_ids"].as_array() {
                ids.extend(t.iter().map(|x| x.as_u64().unwrap() as u32));
            }
            if let Some(f) = c["finish_reason"].as_str() {
                finish = f.to_owned();
            }
        }
    }
    (text, ids, finish, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn greedy_tokens_match_transformers_alone_and_among_15_others() {
    let name = "hf-bitlinear-f32";
    let (prompt, greedy) = expected(name);
    let base = start_fixture(name, |o| o.max_batch = 5).await;
    let body = |p: &[u32], n: usize| json!({"model": "tiny", "prompt": p, "max_tokens": n, "temperature": 0, "return_token_ids": true});
    let (status, v) = post(&base, "/v1/completions", body(&prompt, greedy.len())).await;
    assert_eq!(status, 200, "{v}");
    let got = ids_of(&v);
    // transformers' greedy continuation (up to an end-of-sequence token, which ends ours too).
    assert!(!got.is_empty() && greedy.starts_with(&got), "{got:?} vs transformers' {greedy:?}");
    assert_eq!(v["usage"]["prompt_tokens"], prompt.len());
    assert_eq!(v["usage"]["completion_tokens"], got.len());
    // Sixteen different prompts: each one's tokens alone, then all at once (five slots, so
    // requests queue, join and leave the running batch), half of them streamed.
    let prompts: Vec<Vec<u32>> =
        (0..16u32).map(|i| (0..(3 + i as usize % 9)).map(|j| 3 + (i * 7 + j as u32 * 5) % 60).collect()).collect();
    let mut alone = Vec::new();
    for p in &prompts {
        let (s, v) = post(&base, "/v1/completions", body(p, 12)).await;
        assert_eq!(s, 200, "{v}");
        alone.push((v["choices"][0]["text"].as_str().unwrap().to_owned(), ids_of(&v)));
    }
    let tasks: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (base, b) = (base.clone(), body(p, 12));
            tokio::spawn(async move {
                match i % 2 {
                    0 => {
                        let (s, v) = post(&base, "/v1/completions", b).await;
                        assert_eq!(s, 200, "{v}");
                        (v["choices"][0]["text"].as_str().unwrap().to_owned(), ids_of(&v))
                    }
                    _ => {
                        let mut b = b;
                        b["stream"] = json!(true);
                        let (text, ids, finish, done) = stream(&base, "/v1/completions", b).await;
                        assert!(done && !finish.is_empty());
                        (text, ids)
                    }
                }
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), alone[i], "request {i} differs when batched with 15 others");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_chat_and_completions_agree_with_whole_responses() {
    let base = start_fixture("hf-autobitlinear-bf16", |_| {}).await;
    for path in ["/v1/completions", "/v1/chat/completions"] {
        let mut body = json!({"max_tokens": 8, "temperature": 0, "return_token_ids": true, "stream_options": {"include_usage": true}});
        match path.contains("chat") {
            true => {
                body["messages"] = json!([{"role": "system", "content": "w5"}, {"role": "user", "content": "w3 w4 w9"}])
            }
            false => body["prompt"] = json!("w1 w2 w7"),
        }
        let (s, whole) = post(&base, path, body.clone()).await;
        assert_eq!(s, 200, "{whole}");
        let c = &whole["choices"][0];
        let text = if path.contains("chat") { c["message"]["content"].as_str() } else { c["text"].as_str() }.unwrap();
        body["stream"] = json!(true);
        let (stext, sids, finish, done) = stream(&base, path, body).await;
        assert!(done, "{path}: no [DONE]");
        assert_eq!(
            (stext.as_str(), sids, finish.as_str()),
            (text, ids_of(&whole), c["finish_reason"].as_str().unwrap())
        );
        assert!(["stop", "length"].contains(&finish.as_str()));
    }
    // Stop strings end the text before them.
    let (s, v) = post(&base, "/v1/completions", json!({"prompt": "w1 w2 w7", "max_tokens": 8, "temperature": 0})).await;
    assert_eq!(s, 200);
    let full = v["choices"][0]["text"].as_str().unwrap().to_owned();
    let words: Vec<&str> = full.split(' ').collect();
    assert!(words.len() >= 3, "{full:?}");
    let stop = json!(["never", words[2]]);
    let (s, v) =
        post(&base, "/v1/completions", json!({"prompt": "w1 w2 w7", "max_tokens": 8, "temperature": 0, "stop": stop}))
            .await;
    assert_eq!(s, 200);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][0]["text"].as_str().unwrap(), &full[..full.find(words[2]).unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_text_waits_for_characters_cut_across_tokens() {
    // hf-bitlinear-f32's greedy tokens spell "é日ok!" a byte each through the
    // byte-level tokenizer of scripts/make-byte-level-tokenizer.py: the text
    // waits for each character's last byte, a stop string after one still
    // ends it, and a completion cut inside one ends with its U+FFFD.
    let name = "hf-bitlinear-f32";
    let dir = std::env::temp_dir().join(format!("trinity-serve-byte-level-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("byte-level-tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let tokenizer = Tokenizer::load(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let mut opts = ServeOptions::new("tiny");
    (opts.port, opts.context) = (0, 32);
    let base = start(BitNet::load(&fixture(name), &Device::Cpu).unwrap(), Some(tokenizer), opts).await;
    let (prompt, greedy) = expected(name);
    let cases =
        [(8, json!([]), "é日ok!", "length"), (8, json!(["日o"]), "é", "stop"), (3, json!([]), "é\u{FFFD}", "length")];
    for (max_tokens, stop, text, finish) in cases {
        let body = json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stop": stop, "return_token_ids": true});
        let (s, whole) = post(&base, "/v1/completions", body.clone()).await;
        assert_eq!(s, 200, "{whole}");
        assert!(greedy[..max_tokens].starts_with(&ids_of(&whole)), "{whole}");
        assert_eq!(whole["choices"][0]["text"], text);
        let mut body = body;
        body["stream"] = json!(true);
        let (streamed, _, got, done) = stream(&base, "/v1/completions", body).await;
        assert_eq!((streamed.as_str(), got.as_str(), done), (text, finish, true));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_errors() {
    let base = start_fixture("hf-bitlinear-f32", |o| o.max_body_bytes = 4096).await;
    let client = reqwest::Client::new();
    let raw = |path: &str, body: String| {
        let req = client.post(format!("{base}{path}")).header("content-type", "application/json").body(body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string(), "{v}");
            (status, v["error"]["message"].as_str().unwrap().to_owned())
        }
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/completions", "{\"prompt\": [1, 2".into(), 400, "malformed JSON"),
        ("/v1/completions", "[1, 2]".into(), 400, "invalid"),
        ("/v1/completions", json!({"prompt": [1, 2], "max_tokens": "many"}).to_string(), 400, "max_tokens"),
        ("/v1/completions", json!({"prompt": [1, 2], "temperature": 5}).to_string(), 400, "temperature"),
        ("/v1/completions", json!({"prompt": {"a": 1}}).to_string(), 400, "prompt"),
        ("/v1/completions", json!({"prompt": [1, 64]}).to_string(), 400, "token id 64 is outside the vocabulary"),
        ("/v1/completions", json!({"prompt": vec![1; 32]}).to_string(), 400, "leaves no room in the context of 32"),
        ("/v1/completions", json!({"prompt": [1], "max_tokens": 100000}).to_string(), 400, "max_tokens"),
        ("/v1/completions", json!({"prompt": [1], "n": 2}).to_string(), 400, "`n`"),
        ("/v1/completions", json!({"prompt": []}).to_string(), 400, "empty"),
        ("/v1/completions", json!({"model": "gpt-4", "prompt": [1]}).to_string(), 404, "`gpt-4` does not exist"),
        ("/v1/chat/completions", json!({"messages": "hi"}).to_string(), 400, "messages"),
        ("/v1/chat/completions", json!({"messages": []}).to_string(), 400, "empty"),
        ("/v1/completions", format!("{{\"prompt\": \"{}\"}}", "w1 ".repeat(3000)), 413, "body"),
        ("/v1/nothing", "{}".into(), 404, "no such route"),
    ];
    for (path, body, status, needle) in cases {
        let (s, msg) = raw(path, body.clone()).await;
        assert_eq!(s, status, "{path} {}: {msg}", &body[..body.len().min(60)]);
        assert!(msg.contains(needle), "{path}: `{msg}` does not mention `{needle}`");
    }
    // The server is still up and answering.
    let (s, _) = post(&base, "/v1/completions", json!({"prompt": [1, 2], "max_tokens": 2})).await;
    assert_eq!(s, 200);
    let health = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("trinity_requests_invalid_total 14"), "{metrics}");
    assert!(metrics.contains("trinity_time_to_first_token_seconds_count 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_is_required_when_set() {
    let base = start_fixture("hf-bitlinear-f32", |o| o.api_key = Some("sesame".into())).await;
    let client = reqwest::Client::new();
    let body = json!({"prompt": [1, 2], "max_tokens": 1});
    for auth in [None, Some("Bearer wrong"), Some("sesame")] {
        let mut req = client.post(format!("{base}/v1/completions")).json(&body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "authentication_error");
    }
    let r = client.post(format!("{base}/v1/completions")).bearer_auth("sesame").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client.get(format!("{base}/v1/models")).bearer_auth("sesame").send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"][0]["id"], "tiny");
    assert_eq!(client.get(format!("{base}/v1/models")).send().await.unwrap().status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_429_and_a_gone_client_frees_its_slot() {
    let mut opts = ServeOptions::new("slow");
    (opts.port, opts.max_batch, opts.max_queue, opts.context) = (0, 1, 1, 4096);
    let base = start(slow_model(), None, opts).await;
    // A long streamed request takes the only slot; read one chunk, then go away.
    let client = reqwest::Client::new();
    let long =
        json!({"prompt": [1, 2, 3], "max_tokens": 4000, "temperature": 0, "stream": true, "return_token_ids": true});
    let r = client.post(format!("{base}/v1/completions")).json(&long).send().await.unwrap();
    let mut bytes = r.bytes_stream();
    bytes.next().await.unwrap().unwrap();
    // Meanwhile: one request may wait, the next is refused.
    let short = json!({"prompt": [4, 5], "max_tokens": 3, "temperature": 0, "return_token_ids": true});
    let waiting = tokio::spawn({
        let (base, short) = (base.clone(), short.clone());
        async move { post(&base, "/v1/completions", short).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = client.post(format!("{base}/v1/completions")).json(&short).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    drop(bytes);
    // The slot comes free long before 4000 tokens: the waiting request completes.
    let (s, v) = tokio::time::timeout(Duration::from_secs(120), waiting).await.unwrap().unwrap();
    assert_eq!((s, ids_of(&v).len()), (200, 3), "{v}");
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("trinity_requests_cancelled_total 1"), "{metrics}");
    let generated: f64 =
        metrics.lines().find_map(|l| l.strip_prefix("trinity_generated_tokens_total ")).unwrap().parse().unwrap();
    assert!(generated < 4000.0, "the abandoned request ran on: {generated} tokens");
}

/// A bounded load test: 96 requests at concurrency 16 (capped at 60 s), every response checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_test_every_response_checked() {
    let base = start_fixture("onebitllm-f16", |o| (o.max_batch, o.max_queue) = (8, 128)).await;
    let work = async {
        let mut tasks = Vec::new();
        for client in 0..16u32 {
            let base = base.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..6u32 {
                    let n = 1 + (client + i) as usize % 10;
                    let prompt: Vec<u32> = (0..1 + (client * 3 + i) % 12).map(|j| 3 + (client + j * 11) % 60).collect();
                    let body = json!({"prompt": prompt, "max_tokens": n, "temperature": 0.8, "seed": client * 100 + i, "return_token_ids": true});
                    let (s, v) = post(&base, "/v1/completions", body).await;
                    assert_eq!(s, 200, "{v}");
                    let ids = ids_of(&v);
                    let finish = v["choices"][0]["finish_reason"].as_str().unwrap();
                    assert!(ids.len() == n || (finish == "stop" && ids.len() < n), "{v}");
                    assert_eq!(v["usage"]["completion_tokens"], ids.len());
                    assert_eq!(v["usage"]["prompt_tokens"], prompt.len());
                    assert!(ids.iter().all(|&t| t < 64));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), work).await.expect("the load test took over 60 s");
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("trinity_requests_finished_total 96"), "{metrics}");
    assert!(metrics.contains("trinity_queue_depth 0") && metrics.contains("trinity_batch_sequences 0"), "{metrics}");
}
