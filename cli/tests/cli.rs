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

#[test]
fn info_exits_zero_with_or_without_a_gpu() {
    let (code, stdout, _) = trinity(&["info"]);
    assert_eq!(code, 0);
    if !trinity::cuda::driver_present() {
        assert!(stdout.contains("no NVIDIA driver found"), "{stdout}");
    }
    assert!(stdout.contains("embedded PTX"));
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
