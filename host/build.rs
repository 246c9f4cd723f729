//! Builds the kernel crate into PTX (see the `ptx-builder` crate docs), and
//! records the git commit the binary is built from (for results files).
fn main() {
    ptx_builder::build_for_host("../kernels-gpu");
    git_facts();
}

fn git_facts() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    if let Some(top) = git(&["rev-parse", "--show-toplevel"]) {
        println!("cargo::rerun-if-changed={top}/.git/HEAD");
        println!("cargo::rerun-if-changed={top}/.git/index");
        // An edit to any tracked source changes the dirty flag without touching
        // the index: without these, a binary built from edited sources claimed a
        // clean commit (seen in the first GPU run's results files).
        for file in git(&["-C", &top, "ls-files", "*.rs", "*Cargo.toml", "Cargo.lock"]).unwrap_or_default().lines() {
            println!("cargo::rerun-if-changed={top}/{file}");
        }
    }
    if let Some(sha) = git(&["rev-parse", "--short", "HEAD"]) {
        println!("cargo::rustc-env=TRINITY_GIT_COMMIT={sha}");
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        println!("cargo::rustc-env=TRINITY_GIT_DIRTY={}", if dirty { 1 } else { 0 });
    }
}
