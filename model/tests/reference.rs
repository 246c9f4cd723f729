//! The forward pass against the reference implementations' own outputs
//! (`scripts/make-bitnet-fixtures.py`: transformers' BitNetForCausalLM in both
//! `linear_class` conventions and the online bf16 master, and a PyTorch
//! reference of 1bitLLM's BitnetForCausalLM), on `cpu` and `emu`.

use std::path::PathBuf;

use trinity::Device;
use trinity_model::generate::{Sampling, generate};
use trinity_model::{BitNet, ModelError};

/// Logits must match the reference to this (absolute).
const TOLERANCE: f32 = 1e-4;

const FIXTURES: &[&str] = &["hf-bitlinear-f32", "hf-autobitlinear-bf16", "hf-online-bf16", "onebitllm-f16"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

struct Expected {
    prompt: Vec<u32>,
    logits: Vec<Vec<f32>>,
    greedy: Vec<u32>,
}

fn expected(name: &str) -> Expected {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |k: &str| v[k].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<_>>();
    let logits = v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect();
    Expected { prompt: ids("prompt_ids"), logits, greedy: ids("greedy_ids") }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn check(device: Device, name: &str, decode: usize) {
    let model = BitNet::load(&fixture(name), &device).unwrap();
    let want = expected(name);
    // Every prompt position, one prefill.
    let mut cache = model.new_cache(32).unwrap();
    let got = model.forward(&want.prompt, &mut cache, true).unwrap();
    assert_eq!(got.len(), want.logits.len());
    for (pos, (g, w)) in got.iter().zip(&want.logits).enumerate() {
        let d = max_diff(g, w);
        assert!(d <= TOLERANCE, "{name} on {}: position {pos} logits differ by {d}", device.kind());
    }
    if decode == 0 {
        return;
    }
    // Cached decode, token by token, matches the full recompute.
    let mut cache = model.new_cache(32).unwrap();
    for (pos, &t) in want.prompt.iter().enumerate().take(decode) {
        let row = model.forward(&[t], &mut cache, false).unwrap().pop().unwrap();
        let d = max_diff(&row, &want.logits[pos]);
        assert!(d <= TOLERANCE, "{name} on {}: decode step {pos} differs by {d}", device.kind());
    }
    // Greedy continuation identical to the reference's.
    let n = want.greedy.len().min(decode);
    let out = generate(&model, &want.prompt, n, Sampling::default(), &[], |_| {}).unwrap();
    assert_eq!(out.new_ids, want.greedy[..n], "{name} on {}: greedy tokens", device.kind());
}

#[test]
fn matches_the_reference_on_cpu() {
    for name in FIXTURES {
        check(Device::Cpu, name, usize::MAX);
    }
}

/// The emulator runs one OS thread per GPU thread (every op of the forward
/// pass is a kernel launch there): every fixture's prefill logits, and four
/// cached decode steps and greedy tokens on two of them.
#[test]
fn matches_the_reference_on_emu() {
    for (i, name) in FIXTURES.iter().enumerate() {
        check(Device::Emu, name, if i % 3 == 0 { 4 } else { 0 });
    }
}

#[test]
fn bad_requests_are_clear_errors() {
    let model = BitNet::load(&fixture("hf-bitlinear-f32"), &Device::Cpu).unwrap();
    let mut cache = model.new_cache(32).unwrap();
    let err = model.forward(&[1, 64], &mut cache, false).unwrap_err();
    assert!(matches!(err, ModelError::TokenOutOfRange { id: 64, vocab: 64 }), "{err}");
    let err = model.forward(&[1; 33], &mut cache, false).unwrap_err();
    assert!(err.to_string().contains("exceeds the context of 32"), "{err}");
    let err = generate(&model, &[1; 40], 1, Sampling::default(), &[], |_| {}).unwrap_err();
    assert!(err.to_string().contains("the prompt of 40 tokens exceeds the context of 32"), "{err}");
}
