//! Bad checkpoints and requests: one clear error naming the file, tensor or value; never a panic.

use std::path::{Path, PathBuf};

use trinity::Device;
use trinity_model::BitNet;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A fresh copy of a fixture to damage.
fn copy(name: &str, tag: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("trinity-bad-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    dst
}

fn load_err(dir: &Path) -> String {
    let err = BitNet::load(dir, &Device::Cpu).expect_err("a damaged checkpoint must not load");
    err.to_string()
}

#[test]
fn a_truncated_safetensors_file_is_named() {
    let d = copy("hf-autobitlinear-bf16", "trunc");
    let f = d.join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    let e = load_err(&d);
    assert!(e.contains("model.safetensors: not a valid safetensors file"), "{e}");
}

#[test]
fn a_missing_file_and_a_missing_shard_are_named() {
    let e = load_err(Path::new("/nonexistent/model"));
    assert!(e.contains("/nonexistent/model/config.json"), "{e}");
    let d = copy("hf-bitlinear-f32", "shard");
    std::fs::remove_file(d.join("model-00002-of-00002.safetensors")).unwrap();
    let e = load_err(&d);
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");
}

#[test]
fn missing_keys_and_unknown_architectures_are_named() {
    let d = copy("onebitllm-f16", "keys");
    let cfg = d.join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("\"num_hidden_layers\"", "\"n_layers\"")).unwrap();
    let e = load_err(&d);
    assert!(e.ends_with("config.json: missing key `num_hidden_layers`"), "{e}");
    std::fs::write(&cfg, text.replace("BitnetForCausalLM", "GPT2LMHeadModel")).unwrap();
    let e = load_err(&d);
    assert!(e.contains("architecture `GPT2LMHeadModel` is not supported"), "{e}");
    std::fs::write(&cfg, "{ not json").unwrap();
    assert!(load_err(&d).contains("config.json: not valid JSON"));
}

#[test]
fn a_wrong_dtype_or_shape_names_the_tensor() {
    // A packed checkpoint read as latent weights: the U8 tensor is refused by name.
    let d = copy("hf-autobitlinear-bf16", "dtype");
    let cfg = d.join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("\"offline\"", "\"online\"")).unwrap();
    let e = load_err(&d);
    assert!(e.contains("tensor `model.layers.0.self_attn.q_proj.weight`") && e.contains("dtype U8"), "{e}");
    // A config whose hidden size disagrees with the tensors.
    std::fs::write(&cfg, text.replace("\"intermediate_size\": 128", "\"intermediate_size\": 132")).unwrap();
    let e = load_err(&d);
    assert!(e.contains("tensor `model.layers.0.mlp.gate_proj.weight`") && e.contains("expected [33, 64]"), "{e}");
}

#[test]
fn a_missing_tensor_is_named() {
    let d = copy("onebitllm-f16", "tensor");
    let cfg = d.join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    // Claim three layers where there are two.
    std::fs::write(&cfg, text.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3")).unwrap();
    let e = load_err(&d);
    assert!(e.contains("tensor `model.layers.2.input_layernorm.weight` is missing from the checkpoint"), "{e}");
}

#[test]
fn lm_head_precisions_by_name_on_every_backend() {
    use trinity_model::HeadPrecision;
    for p in [HeadPrecision::F32, HeadPrecision::F16, HeadPrecision::Int8] {
        assert_eq!(p.name().parse::<HeadPrecision>(), Ok(p));
    }
    let err = "bf16".parse::<HeadPrecision>().unwrap_err();
    assert!(err.contains("`bf16`") && err.contains("f32, f16 or int8"), "{err}");
    let cfg = trinity_model::config::shape("bitnet_b1_58-large").unwrap();
    let tiny = trinity_model::ModelConfig { layers: 1, vocab: 40, ..cfg };
    // Every backend takes every precision (the GPU kernels run on the emulator here).
    let mut model = trinity_model::BitNet::random(tiny, &trinity::Device::Emu, 3).unwrap();
    for p in [HeadPrecision::Int8, HeadPrecision::F16, HeadPrecision::F32] {
        model.set_head_precision(p).unwrap();
        assert_eq!(model.head_precision(), p);
    }
}

#[test]
fn decode_bytes_count_the_head_in_its_precision() {
    use trinity_model::HeadPrecision;
    let cfg = trinity_model::config::shape("bitnet_b1_58-large").unwrap();
    let tiny = trinity_model::ModelConfig { layers: 1, vocab: 40, ..cfg };
    let (v, h) = (tiny.vocab, tiny.hidden);
    let mut model = BitNet::random(tiny, &Device::Cpu, 3).unwrap();
    // K = 1536 and 4096 need no padding: 2 bits per ternary weight.
    let ternary = model.linear_weights() / 4;
    assert_eq!(model.linear_weights(), 4 * 1536 * 1536 + 3 * 4096 * 1536);
    let mut bytes = vec![];
    for (p, head) in
        [(HeadPrecision::F32, v * h * 4), (HeadPrecision::F16, v * h * 2), (HeadPrecision::Int8, v * h + v * 4)]
    {
        model.set_head_precision(p).unwrap();
        assert_eq!(model.head_precision(), p);
        bytes.push((model.decode_bytes(), ternary + head));
    }
    for (got, want) in bytes {
        assert_eq!(got, want);
    }
}
