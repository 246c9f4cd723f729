//! The official `openai` Python client (PyPI) drives the server: completions
//! and chat, whole and streamed, exact greedy tokens, errors
//! (`serve/tests/openai_client.py`). Needs `python3` with `openai`
//! (`pip install openai`; CI installs it). Set `TRINITY_SKIP_OPENAI_CLIENT=1`
//! to skip it where Python cannot be had; without that, a missing client fails.

use std::path::PathBuf;

use trinity::Device;
use trinity_model::BitNet;
use trinity_model::generate::Tokenizer;
use trinity_serve::{ServeOptions, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_client_works() {
    if std::env::var_os("TRINITY_SKIP_OPENAI_CLIENT").is_some() {
        eprintln!("skipped: TRINITY_SKIP_OPENAI_CLIENT is set");
        return;
    }
    let python = std::env::var("TRINITY_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = std::process::Command::new(&python).args(["-c", "import openai"]).output();
    match probe {
        Ok(o) if o.status.success() => {}
        _ => panic!("`{python} -c 'import openai'` failed: pip install openai (or set TRINITY_SKIP_OPENAI_CLIENT=1)"),
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = here.join("../model/tests/fixtures/hf-bitlinear-f32");
    let model = BitNet::load(&dir, &Device::Cpu).unwrap();
    let mut opts = ServeOptions::new("tiny");
    (opts.port, opts.context, opts.api_key) = (0, 32, Some("sesame".into()));
    let server = Server::start(model, Some(Tokenizer::load(&dir).unwrap()), opts).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    tokio::spawn(server.run());
    let script = here.join("tests/openai_client.py");
    let out =
        tokio::process::Command::new(&python).arg(&script).arg(&base).arg(&dir).arg("sesame").output().await.unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{} failed:\n{stdout}\n{stderr}", script.display());
    assert!(stdout.contains("all checks passed"), "{stdout}");
    eprintln!("{stdout}");
}
