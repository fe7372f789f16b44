//! Privileged tests: run as root; otherwise skip with a reason, except under `CI=true`, where
//! a test that cannot run fails (ztunnel's `can_run_privileged_test`).

/// Whether `test` can run. Panics under `CI=true` when it cannot.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "{test}: needs root (CAP_BPF, CAP_NET_ADMIN) and CI=true forbids skipping it"
    );
    eprintln!("SKIPPED {test}: needs root (CAP_BPF, CAP_NET_ADMIN); run `sudo cargo xtask test`");
    false
}
