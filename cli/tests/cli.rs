//! The `trinity` binary: exit codes and messages.

use std::process::Command;

fn trinity(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trinity")).args(args).output().expect("running trinity");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `trinity args` with its stdout's reader closed before it writes (`| head`):
/// its exit status and stderr.
fn trinity_unread(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trinity"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running trinity");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("waiting for trinity");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn info_exits_zero_with_or_without_a_gpu() {
    let (code, stdout, _) = trinity(&["info"]);
    assert_eq!(code, 0);
    if !trinity::cuda::driver_present() {
        assert!(stdout.contains("no NVIDIA driver found"), "{stdout}");
    }
    assert!(stdout.contains("embedded PTX"));
    // The CPU backend's line names the ternary and float paths this CPU runs.
    let (ternary, float) = (trinity::cpu_ternary::simd_level(), trinity::cpu::float_path().name());
    let named = format!("ternary {ternary}, float {float}");
    assert!(stdout.lines().any(|l| l.contains("CPU backend:") && l.ends_with(&named)), "{stdout}");
}

#[test]
fn threads_sets_the_cpu_backends_pool() {
    for args in [&["--threads", "1", "info"][..], &["info", "-t", "3"]] {
        let (code, stdout, stderr) = trinity(args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        let want = format!("CPU, {} threads,", args.iter().find_map(|a| a.parse::<usize>().ok()).unwrap());
        assert!(stdout.lines().any(|l| l.contains("CPU backend:") && l.contains(&want)), "{args:?}: {stdout}");
    }
    let (code, _, stderr) = trinity(&["info", "--threads", "0"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("--threads"), "{stderr}");
}

#[test]
fn verify_on_the_emulator_passes() {
    let (code, stdout, stderr) = trinity(&["verify", "--backend", "emu"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn verify_on_cuda_without_a_driver_is_a_clear_error() {
    if trinity::cuda::driver_present() {
        return;
    }
    let (code, _, stderr) = trinity(&["verify", "--backend", "cuda"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("error: opening the CUDA backend: no NVIDIA driver found"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn run_on_cuda_without_a_driver_fails_with_the_reason_and_run_on_emu_is_refused() {
    if !trinity::cuda::driver_present() {
        let (code, _, stderr) = trinity(&["run", "--backend", "cuda", "--quick", "--results-dir", "/nonexistent"]);
        assert_eq!(code, 1);
        assert!(stderr.contains("the CUDA backend is unavailable: no NVIDIA driver found"), "{stderr}");
    }
    let (code, _, stderr) = trinity(&["run", "--backend", "emu", "--quick"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("the emulator runs one OS thread per GPU thread"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn auto_says_which_backend_it_chose_and_why() {
    let (code, stdout, stderr) = trinity(&["trihash", "pow", "--random", "--seed", "1", "--mwm", "2"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stderr.contains("backend: auto: "), "{stderr}");
    assert!(stdout.contains("trailing zero trits"), "{stdout}");
}

#[test]
fn bad_arguments_are_rejected_by_the_parser() {
    let (code, _, stderr) = trinity(&["verify", "--backend", "tpu"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid value 'tpu'"), "{stderr}");
}

mod run_compare_report {
    use super::trinity;
    use std::path::{Path, PathBuf};
    use trinity_measure::results::RunResults;
    use trinity_measure::stats::Summary;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("trinity-it-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// One quick CPU run shared by the tests below (a few seconds).
    fn quick_run(dir: &Path) -> PathBuf {
        let (code, stdout, stderr) =
            trinity(&["run", "--quick", "--backend", "cpu", "--seed", "3", "--results-dir", dir.to_str().unwrap()]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.starts_with("# Trinity run: CPU"), "{stdout}");
        assert!(stdout.contains("Backend: cpu requested"), "{stdout}");
        let json = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "json"))
            .expect("a results file");
        assert!(json.with_extension("md").exists());
        json
    }

    #[test]
    fn run_writes_valid_results_and_compare_and_report_read_them() {
        let dir = temp_dir("run");
        let json = quick_run(&dir);
        let results = RunResults::load(&json).unwrap();
        assert!(results.verification_passed && !results.verification.is_empty());
        assert!(results.headline.ternary_tokens_per_s.is_some_and(|t| t > 0.0));
        assert!(results.headline.trihash_mh_s.is_some_and(|t| t > 0.0));
        let noise = results.noise_robustness.as_ref().unwrap();
        assert_eq!(noise.trit_replacement.len(), 7);
        assert!(results.benchmarks.iter().all(|b| b.time.samples >= 3 && b.throughput > 0.0));
        // A CPU's decode ceiling is its read bandwidth, one of the run's
        // benchmarks (half a memcpy, its old ceiling, is not one): the decode
        // GEMV and every linear stack's decode fraction are ratios to it.
        let read = results.headline.read_bandwidth_gb_s.expect("a CPU run measures its read bandwidth") * 1e9;
        let read_bench = results.benchmarks.iter().find(|b| b.name == "read/host-memory").expect("the read benchmark");
        // (The headline keeps GB/s: back in bytes/s it may differ in the last bit.)
        assert!((read_bench.throughput - read).abs() <= 1e-12 * read, "{} against {read}", read_bench.throughput);
        let gemv = results.benchmarks.iter().find(|b| b.name.starts_with("ternary_gemv/") && b.name.ends_with("/cold"));
        let gemv = gemv.expect("the cold GEMV");
        let to_read = gemv.ratio.as_ref().expect("the GEMV's ratio");
        assert_eq!(to_read.to, "read/host-memory");
        assert!((to_read.value - gemv.throughput / read).abs() <= 1e-12 * to_read.value);
        assert!(!results.models.is_empty());
        for m in &results.models {
            let want = m.weight_bytes as f64 * m.decode_tokens_per_s / read;
            let got = m.decode_fraction_of_bandwidth_bound.expect("a decode fraction");
            assert!((got - want).abs() <= 1e-12 * want, "{}: {got} against {want}", m.model);
        }

        // The same file twice: SAME everywhere, exit 0.
        let j = json.to_str().unwrap();
        let (code, stdout, stderr) = trinity(&["compare", j, j]);
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(!stdout.contains("SLOWER") && !stdout.contains("UNSURE"), "{stdout}");
        assert!(stdout.contains("| SAME |"), "{stdout}");

        // A doctored copy 30 % slower: SLOWER everywhere, exit 1.
        let mut slow = results.clone();
        for b in &mut slow.benchmarks {
            b.samples.iter_mut().for_each(|s| *s *= 1.3);
            b.time = Summary::of(&b.samples).unwrap();
        }
        let slow_path = dir.join("slow.json");
        std::fs::write(&slow_path, serde_json::to_string(&slow).unwrap()).unwrap();
        let (code, stdout, _) = trinity(&["compare", j, slow_path.to_str().unwrap()]);
        assert_eq!(code, 1, "{stdout}");
        // Its reader gone before it writes (`| head`), compare still says SLOWER by its status.
        let (code, stderr) = super::trinity_unread(&["compare", j, slow_path.to_str().unwrap()]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stdout.contains("SLOWER") && !stdout.contains("| SAME |"), "{stdout}");

        // Report with charts.
        let charts = dir.join("charts");
        let (code, stdout, stderr) = trinity(&["report", j, "--charts", charts.to_str().unwrap()]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("| Run | Device |"), "{stdout}");
        for svg in ["throughput.svg", "noise.svg"] {
            assert!(std::fs::read_to_string(charts.join(svg)).unwrap().starts_with("<svg"));
        }

        // A malformed file is a clear error naming it.
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{}").unwrap();
        let (code, _, stderr) = trinity(&["compare", j, bad.to_str().unwrap()]);
        assert_eq!(code, 1);
        assert!(stderr.contains("bad.json is not a Trinity results file"), "{stderr}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

mod model {
    use super::trinity;
    use std::path::PathBuf;

    fn fixture(name: &str) -> String {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../model/tests/fixtures")
            .join(name)
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_reader_that_goes_away_ends_the_command_quietly() {
        // `trinity logits … | head`: the pipe's reader is closed before the
        // command writes, so its first write fails (print! panicked on it).
        let model = fixture("hf-bitlinear-f32");
        for args in [
            &["logits", "--model", &model, "--prompt-ids", "1,2,3"][..],
            &["generate", "--model", &model, "--backend", "cpu", "--prompt-ids", "1,2", "--max-tokens", "4"],
            &["info"],
        ] {
            let (code, stderr) = super::trinity_unread(args);
            assert_eq!(code, Some(0), "{args:?}: {stderr}");
            assert!(!stderr.contains("panicked") && !stderr.contains("error:"), "{args:?}: {stderr}");
        }
        // generate stops at its first unread token rather than computing the
        // rest (this prompt's first tokens are words, not the end of sequence).
        let (_, stderr) = super::trinity_unread(&[
            "generate",
            "--model",
            &model,
            "--backend",
            "cpu",
            "--prompt-ids",
            "1,17,5,42,9,33,12,60",
            "--max-tokens",
            "4",
        ]);
        assert!(stderr.contains(", 1 new (no decode step) (stop: output closed)"), "{stderr}");
    }

    #[test]
    fn streamed_text_waits_for_characters_cut_across_tokens() {
        // hf-bitlinear-f32 with a byte-level tokenizer (a token per byte, as
        // Llama 3's vocabulary cuts rare characters) whose greedy tokens
        // spell "é日ok!" a byte each (scripts/make-byte-level-tokenizer.py):
        // streamed as each token comes, the text must wait for each
        // character's last byte (the first byte alone decodes as U+FFFD,
        // after which prefix matching printed nothing more).
        let dir = std::env::temp_dir().join(format!("trinity-byte-level-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in std::fs::read_dir(fixture("hf-bitlinear-f32")).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
        }
        std::fs::copy(PathBuf::from(fixture("byte-level-tokenizer.json")), dir.join("tokenizer.json")).unwrap();
        let want = expected("hf-bitlinear-f32");
        let model = dir.to_string_lossy().into_owned();
        let generate = |format| {
            trinity(&[
                "generate",
                "--model",
                &model,
                "--backend",
                "cpu",
                "--prompt-ids",
                &ids(&want["prompt_ids"]),
                "--max-tokens",
                "8",
                "--format",
                format,
            ])
        };
        let (code, stdout, stderr) = generate("text");
        assert_eq!((code, stdout.as_str()), (0, "é日ok!\n"), "{stderr}");
        let (code, stdout, stderr) = generate("json");
        assert_eq!(code, 0, "{stderr}");
        let got: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!((&got["new_ids"], got["text"].as_str()), (&want["greedy_ids"], Some("é日ok!")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn expected(name: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(PathBuf::from(fixture(name)).join("expected.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn ids(v: &serde_json::Value) -> String {
        v.as_array().unwrap().iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
    }

    #[test]
    fn logits_and_greedy_generation_match_transformers_on_both_linear_classes() {
        for name in ["hf-bitlinear-f32", "hf-autobitlinear-bf16"] {
            let want = expected(name);
            let prompt = ids(&want["prompt_ids"]);
            let (code, stdout, stderr) =
                trinity(&["logits", "--model", &fixture(name), "--prompt-ids", &prompt, "--backend", "cpu"]);
            assert_eq!(code, 0, "{stderr}");
            let got: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(got["prompt_ids"], want["prompt_ids"]);
            for (g, w) in got["logits"].as_array().unwrap().iter().zip(want["logits"].as_array().unwrap()) {
                for (a, b) in g.as_array().unwrap().iter().zip(w.as_array().unwrap()) {
                    assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= 1e-4, "{name}: {a} vs {b}");
                }
            }
            let (code, stdout, stderr) = trinity(&[
                "generate",
                "--model",
                &fixture(name),
                "--prompt-ids",
                &prompt,
                "--max-tokens",
                "8",
                "--temperature",
                "0",
                "--format",
                "json",
                "--backend",
                "cpu",
            ]);
            assert_eq!(code, 0, "{stderr}");
            let got: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(got["new_ids"], want["greedy_ids"], "{name}");
            assert!(got["text"].as_str().unwrap().starts_with('w'), "{stdout}");
            assert!(got["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
        }
    }

    #[test]
    fn bad_model_requests_exit_non_zero_with_one_clear_line() {
        let (code, _, stderr) =
            trinity(&["logits", "--model", &fixture("onebitllm-f16"), "--prompt-ids", "1,99", "--backend", "cpu"]);
        assert_eq!(code, 1);
        assert!(stderr.contains("token id 99 is outside the vocabulary (size 64)"), "{stderr}");
        assert!(!stderr.contains("panicked"));
        let (code, _, stderr) = trinity(&["logits", "--model", "nowhere/none", "--prompt-ids", "1"]);
        assert_eq!(code, 1);
        assert!(stderr.contains("nowhere/none: not a directory"), "{stderr}");
        let (code, _, stderr) = trinity(&["bench-model", "--shape", "gpt-5", "--backend", "cpu"]);
        assert_eq!(code, 1);
        assert!(stderr.contains("--shape gpt-5: unknown"), "{stderr}");
        // A test longer than the context names its own sum: the decode test's after its depth.
        let model = fixture("onebitllm-f16");
        let (code, _, stderr) =
            trinity(&["bench-model", "--model", &model, "-p", "4", "-n", "4", "-d", "30", "--backend", "cpu"]);
        assert_eq!(code, 1);
        assert!(stderr.contains("-d 30 + -n 4 = 34 tokens exceeds the model's context of 32"), "{stderr}");
        let (code, _, stderr) = trinity(&["bench-model", "--model", &model, "-p", "30", "-n", "4", "--backend", "cpu"]);
        assert_eq!(code, 1);
        assert!(stderr.contains("-p 30 + -n 4 = 34 tokens exceeds the model's context of 32"), "{stderr}");
    }

    #[test]
    fn chat_prompts_go_through_the_checkpoints_template() {
        let (code, stdout, stderr) = trinity(&[
            "generate",
            "--model",
            &fixture("onebitllm-f16"),
            "--prompt",
            "w7 w9",
            "--chat",
            "--max-tokens",
            "2",
            "--format",
            "json",
            "--backend",
            "cpu",
        ]);
        assert_eq!(code, 0, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        // <s> w1 w7 w9 </s> w2 → ids 1, 4, 10, 12, 2, 5.
        assert_eq!(v["prompt_ids"], serde_json::json!([1, 4, 10, 12, 2, 5]), "{stderr}");
    }

    #[test]
    fn bench_model_reports_prefill_and_decode() {
        let dir = std::env::temp_dir().join(format!("trinity-bench-model-{}", std::process::id()));
        let (code, stdout, stderr) = trinity(&[
            "bench-model",
            "--results-dir",
            dir.to_str().unwrap(),
            "--model",
            &fixture("hf-online-bf16"),
            "-p",
            "8",
            "-n",
            "4",
            "-r",
            "2",
            "-d",
            "3",
            "--backend",
            "cpu",
            "-o",
            "json",
            "--lm-head",
            "int8",
            "--f16-baseline",
            "on",
        ]);
        assert_eq!(code, 0, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert!(v["pp"]["tokens_per_s"].as_f64().unwrap() > 0.0 && v["tg"]["samples"].as_array().unwrap().len() == 2);
        assert!(v["peak_rss_bytes"].as_u64().unwrap() > 0);
        // Fractions of the bounds measured in the run, and the int8 head's error against the f32 head.
        assert!(v["tg"]["fraction_of_bound"].as_f64().unwrap() > 0.0, "{stdout}");
        assert!(v["bandwidth_bytes_per_s"].as_f64().unwrap() > 1e8, "{stdout}");
        // Each repetition is divided by the bandwidth measured right after it; the fraction is their mean.
        let bytes = (v["decode_bytes_per_token"].as_u64().unwrap() + v["kv_bytes_per_token"].as_u64().unwrap()) as f64;
        let per_rep: Vec<f64> = v["tg"]["samples"]
            .as_array()
            .unwrap()
            .iter()
            .zip(v["bandwidth_samples"].as_array().unwrap())
            .map(|(t, bw)| t.as_f64().unwrap() * bytes / bw.as_f64().unwrap())
            .collect();
        assert_eq!(per_rep.len(), 2, "{stdout}");
        let want = per_rep.iter().sum::<f64>() / 2.0;
        assert!((v["tg"]["fraction_of_bound"].as_f64().unwrap() - want).abs() <= 1e-9 * want, "{stdout}");
        // Decode after 3 cached tokens; its bound counts the KV cache read at the mean context (3 + 2.5 positions).
        assert_eq!(v["tg"]["depth"], 3);
        // 2 layers × (k, v) × 2 KV heads × 16 dims × 4 bytes = 512 bytes per position, × 5.5.
        assert_eq!(v["kv_bytes_per_token"], 2816, "{stdout}");
        assert_eq!(v["lm_head"], "int8");
        let e = &v["head_error"];
        assert!(e["max_abs_logit_diff"].as_f64().unwrap() > 0.0 && e["positions"] == 16, "{stdout}");
        // The dense f16 baseline's prefill, timed in the same run, and the ternary prefill's ratio to it.
        let b = &v["pp_dense_f16"];
        assert_eq!(b["samples"].as_array().map(Vec::len), Some(2), "{stdout}");
        assert!(b["tokens_per_s"].as_f64().unwrap() > 0.0 && b["ternary_speedup"].as_f64().unwrap() > 0.0, "{stdout}");
        // The same figures in the results schema, for `trinity compare`.
        let file = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let names: Vec<&str> =
            r["benchmarks"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
        assert!(names.iter().any(|n| n.ends_with("/pp8")) && names.iter().any(|n| n.ends_with("/tg4@d3")), "{names:?}");
        assert!(names.iter().any(|n| n.ends_with("/pp8-dense-f16")), "{names:?}");
        assert_eq!(r["benchmarks"][1]["samples"].as_array().unwrap().len(), 2);
        assert!(r["benchmarks"][1]["ratio"]["to"].as_str().unwrap().contains("bandwidth"), "{r}");
        std::fs::remove_dir_all(&dir).unwrap();
        // A precision it does not have: a clear error naming the ones it has, before any timing.
        let (code, _, stderr) =
            trinity(&["bench-model", "--no-results", "--model", &fixture("hf-online-bf16"), "--lm-head", "bf16"]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("bf16") && stderr.contains("f32, f16 or int8"), "{stderr}");
    }

    #[test]
    fn bench_model_skips_a_test_of_zero_tokens_as_llama_bench() {
        let model = fixture("onebitllm-f16");
        let bench = |extra: &[&str]| {
            let mut args = vec!["bench-model", "--no-results", "--model", &model, "-r", "2", "--backend", "cpu"];
            args.extend_from_slice(extra);
            trinity(&args)
        };
        // Decode only: the prefill test is null, and no int8 peak is measured for it.
        let (code, stdout, stderr) = bench(&["-p", "0", "-n", "3", "-d", "2", "-o", "json"]);
        assert_eq!(code, 0, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert!(
            v["pp"].is_null() && v["int8_macs_per_s"].is_null() && v["int8_peak_instruction"].is_null(),
            "{stdout}"
        );
        assert_eq!(v["tg"]["samples"].as_array().map(Vec::len), Some(2), "{stdout}");
        assert_eq!(v["tg"]["depth"], 2, "{stdout}");
        // Prefill only: one CSV row, the prefill's; no KV cache in a bound.
        let (code, stdout, stderr) = bench(&["-p", "5", "-n", "0", "-o", "csv"]);
        assert_eq!(code, 0, "{stderr}");
        let rows: Vec<&str> = stdout.lines().skip(1).collect();
        assert_eq!(rows.len(), 1, "{stdout}");
        assert!(rows[0].contains(",pp5,"), "{stdout}");
        let (code, stdout, _) = bench(&["-p", "5", "-n", "0"]);
        assert_eq!(code, 0);
        assert!(stdout.contains("| pp5 |") && !stdout.contains("| tg") && !stdout.contains("decode bound"), "{stdout}");
        // Nothing left to run, or an option for the skipped test: a clear error before any timing.
        for (extra, want) in [
            (&["-p", "0", "-n", "0"][..], "-p 0 and -n 0 leave no test to run"),
            (&["-p", "4", "-n", "0", "-d", "3"][..], "-d 3 sets the decode test's depth, and -n 0 skips that test"),
            (&["-p", "0", "-n", "2", "--f16-baseline", "on"][..], "--f16-baseline on times the prefill test"),
        ] {
            let (code, _, stderr) = bench(extra);
            assert_eq!(code, 1, "{extra:?}: {stderr}");
            assert!(stderr.contains(want) && !stderr.contains("rep 1/"), "{extra:?}: {stderr}");
        }
        let (code, _, stderr) =
            trinity(&["bench-model", "--no-results", "--model", &model, "-r", "0", "--backend", "cpu"]);
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains("-r must be at least 1"), "{stderr}");
    }

    #[test]
    fn bench_serve_drives_the_server_at_each_concurrency() {
        let model = fixture("onebitllm-f16");
        let bench = |extra: &[&str]| {
            let mut args = vec!["bench-serve", "--model", &model, "--backend", "cpu", "-p", "3", "-n", "4"];
            args.extend_from_slice(extra);
            trinity(&args)
        };
        let (code, stdout, stderr) = bench(&["--concurrency", "1,3", "--requests-per-client", "2", "-o", "json"]);
        assert_eq!(code, 0, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!((&v["backend"], &v["prompt_tokens"], &v["generated_tokens"]), (&"cpu".into(), &3.into(), &4.into()));
        let levels = v["levels"].as_array().unwrap();
        assert_eq!(levels.len(), 2, "{stdout}");
        for (l, (c, requests)) in levels.iter().zip([(1, 2), (3, 6)]) {
            assert_eq!((&l["concurrency"], &l["requests"]), (&c.into(), &requests.into()), "{stdout}");
            // Every request streamed its 4 tokens: a decode rate, a first token, gaps between the rest.
            assert!(l["aggregate_tokens_per_s"].as_f64().unwrap() > 0.0, "{stdout}");
            assert!(l["per_stream_decode_tokens_per_s"].as_f64().unwrap() > 0.0, "{stdout}");
            let (p50, p90) = (l["ttft_p50_s"].as_f64().unwrap(), l["ttft_p90_s"].as_f64().unwrap());
            assert!(0.0 < p50 && p50 <= p90, "{stdout}");
            assert!(l["token_latency_p99_s"].as_f64().unwrap() >= l["token_latency_p50_s"].as_f64().unwrap());
        }
        let (code, stdout, stderr) = bench(&["--concurrency", "2", "--requests-per-client", "1"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains(" | cpu | 2 | 2 | ") && stdout.contains("prompt 3 tokens, 4 generated"), "{stdout}");
        let (code, _, stderr) = bench(&["--concurrency", "1,0"]);
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains("--concurrency levels, -p, -n and --requests-per-client must be at least 1"),
            "{stderr}"
        );
    }
}
