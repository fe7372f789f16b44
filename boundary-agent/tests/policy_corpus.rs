//! Every file in `policies/invalid/` must be refused with the error its first line expects
//! (`# expect: <text the error contains>`; an expectation that starts with `:line:col:` is the
//! error's start right after the file name, so the place is checked exactly), and every file
//! in `policies/valid/` (plus the shipped example) must compile. No root needed.

use std::path::{Path, PathBuf};

use boundary_agent::policy::{self, Policy, SlotTable};

fn files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/policies")
        .join(dir);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    out.sort();
    out
}

#[test]
fn invalid_policies_are_refused_with_their_error() {
    let cases = files("invalid");
    assert!(cases.len() >= 30, "the corpus has {} files", cases.len());
    let mut failures = Vec::new();
    for path in &cases {
        let text = std::fs::read_to_string(path).expect("read");
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: first line must be `# expect: ...`", path.display()));
        match Policy::from_file(path) {
            Ok(_) => failures.push(format!("{}: accepted", path.display())),
            Err(e) => {
                let msg = e.to_string();
                let file = path.display().to_string();
                let placed =
                    !expect.starts_with(':') || msg.starts_with(&format!("{file}{expect}"));
                if !msg.contains(expect) || !msg.starts_with(&file) || !placed {
                    failures.push(format!(
                        "{}:\n  expected: {expect}\n  got:      {msg}",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_policies_compile() {
    let mut paths = files("valid");
    paths.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policy.yaml"));
    for path in paths {
        let p = Policy::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        policy::compile(&p, &SlotTable::new(), 256)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
