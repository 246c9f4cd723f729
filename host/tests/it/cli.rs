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
fn bad_arguments_are_rejected_by_the_parser() {
    let (code, _, stderr) = trinity(&["verify", "--backend", "tpu"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid value 'tpu'"), "{stderr}");
}
