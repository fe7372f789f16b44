//! The install layout in a temporary root, checked with systemd's own tools: `systemd-analyze
//! verify` on the installed unit, `systemctl --root` to enable it, `systemd-analyze security`
//! for the exposure README.md quotes.

use std::{ffi::OsStr, path::Path, process::Command};

use boundary_tests::{netns::unique_name, require_root};

use super::*;

/// Whether `tool` is installed. Missing: skipped with a reason, but a failure under `CI=true`
/// (`cargo xtask setup` installs it with the `systemd` package).
pub(super) fn require_tool(test: &str, tool: &str) -> bool {
    if setup::find_command(tool).is_some() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "{test}: {tool} is missing (package systemd; `cargo xtask setup` installs it) and CI=true forbids skipping"
    );
    eprintln!("SKIPPED {test}: {tool} is missing; apt-get install systemd");
    false
}

/// A directory under the system's temp dir, removed on drop.
pub(super) struct TempRoot(pub(super) PathBuf);

impl TempRoot {
    pub(super) fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name(&format!("boundary-install-{tag}")));
        fs::create_dir_all(&dir).expect("create temp root");
        Self(dir)
    }

    /// Every path under the root, relative to it, sorted.
    fn contents(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for entry in fs::read_dir(dir).expect("read dir") {
                let path = entry.expect("entry").path();
                out.push(
                    path.strip_prefix(base)
                        .expect("below the root")
                        .display()
                        .to_string(),
                );
                if path.is_dir() && !path.is_symlink() {
                    walk(&path, base, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.0, &self.0, &mut out);
        out.sort();
        out
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A stand-in for the agent: the layout does not depend on what the binary is.
fn fake_agent(dir: &Path) -> PathBuf {
    let path = dir.join("fake-boundary-agent");
    fs::write(&path, "#!/bin/sh\nexit 0\n").expect("write fake agent");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).expect("chmod");
    path
}

/// The value of the unit's first `KEY=` line.
fn unit_setting(key: &str) -> &'static str {
    UNIT.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("the unit sets {key}="))
}

pub(super) fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_unit_runs_the_installed_binary_with_the_installed_configuration() {
    assert_eq!(
        unit_setting("ExecStart"),
        format!("/{BINARY} run --config /{CONFIG_DIR}/agent.yaml")
    );
    assert!(CONFIGS.iter().any(|(name, _)| *name == "agent.yaml"));
}

#[test]
fn the_unit_opens_the_pin_directory_the_example_configuration_pins_in() {
    let root = TempRoot::new("pins");
    let layout = Layout::new(&root.0);
    layout
        .install(&fake_agent(&root.0))
        .expect("install into a temporary root");
    let pin_dir = layout.pin_dir().display().to_string();
    assert_eq!(unit_setting("ReadWritePaths"), format!("-{pin_dir}"));
    assert_eq!(
        unit_setting("ExecStartPre"),
        format!("+/bin/mkdir -p {pin_dir}")
    );
}

#[test]
fn install_then_uninstall_leaves_a_temporary_root_as_it_was() {
    let test = "install_then_uninstall_leaves_a_temporary_root_as_it_was";
    let scratch = TempRoot::new("agent");
    let agent = fake_agent(&scratch.0);
    let root = TempRoot::new("root");
    let layout = Layout::new(&root.0);

    layout.install(&agent).expect("install");
    assert_eq!(
        fs::read(layout.binary()).expect("binary"),
        fs::read(&agent).expect("agent")
    );
    let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(
        mode(&layout.binary()),
        0o755,
        "executable by the service manager"
    );
    assert_eq!(fs::read_to_string(layout.unit()).expect("unit"), UNIT);
    assert_eq!(mode(&layout.unit()), 0o644);
    for (name, text) in CONFIGS {
        assert_eq!(
            fs::read_to_string(layout.config(name)).expect("config"),
            *text
        );
    }

    // The operator's configuration is theirs: a second install keeps it.
    let edited = "interfaces: [ens3]\npolicy: policy.yaml\n";
    fs::write(layout.config("agent.yaml"), edited).expect("edit config");
    let done = layout.install(&agent).expect("install again");
    assert_eq!(
        fs::read_to_string(layout.config("agent.yaml")).expect("config"),
        edited
    );
    assert!(
        done.iter()
            .any(|l| l.starts_with("kept") && l.contains("agent.yaml")),
        "{done:?}"
    );

    // Enabled as an operator would, so uninstall has a link to remove.
    if require_tool(test, "systemctl") {
        let (ok, out) = run(Command::new("systemctl")
            .arg("--root")
            .arg(&root.0)
            .args(["enable", SERVICE]));
        assert!(ok, "systemctl --root enable: {out}");
        let link = root
            .0
            .join(UNIT_DIR)
            .join("multi-user.target.wants")
            .join(SERVICE);
        assert!(link.is_symlink(), "enabled: {out}");
    }

    // The changed configuration stays, and uninstall says so; everything else goes.
    let done = layout.uninstall().expect("uninstall");
    assert!(
        done.iter()
            .any(|l| l.contains("agent.yaml") && l.contains("changed")),
        "{done:?}"
    );
    assert_eq!(
        root.contents(),
        ["etc", "etc/boundary", "etc/boundary/agent.yaml"]
    );
    fs::remove_file(layout.config("agent.yaml")).expect("remove the edited config");
    layout.uninstall().expect("uninstall again");
    assert_eq!(
        root.contents(),
        Vec::<String>::new(),
        "uninstall leaves the root clean"
    );
}

#[test]
fn the_installed_unit_verifies_against_this_system() {
    let test = "the_installed_unit_verifies_against_this_system";
    if !require_tool(test, "systemd-analyze") || !require_root(test) {
        return;
    }
    let root = TempRoot::new("verify");
    let layout = Layout::new(&root.0);
    layout
        .install(&fake_agent(&root.0))
        .expect("install into a temporary root");
    // `verify --root=DIR` would look for every unit and command the unit names (sysinit.target,
    // /bin/kill) inside DIR; instead, the installed binary directory is mounted over this
    // system's, in a mount namespace of verify's own, and the installed unit is checked
    // against this system's units and commands.
    let (ok, out) = run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" "$2" && exec systemd-analyze verify "$3""#)
        .arg("sh")
        .arg(layout.binary().parent().expect("bin dir"))
        .arg(Path::new("/").join(BINARY).parent().expect("bin dir"))
        .arg(layout.unit()));
    assert!(ok && out.trim().is_empty(), "systemd-analyze verify: {out}");

    // And it fails when the binary is not where ExecStart says: the check has teeth.
    fs::remove_file(layout.binary()).expect("remove binary");
    let (ok, out) = run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" "$2" && exec systemd-analyze verify "$3""#)
        .arg("sh")
        .arg(layout.binary().parent().expect("bin dir"))
        .arg(Path::new("/").join(BINARY).parent().expect("bin dir"))
        .arg(layout.unit()));
    assert!(!ok && out.contains("boundary-agent"), "{out}");
}

#[test]
fn the_units_exposure_is_the_one_the_readme_quotes() {
    let test = "the_units_exposure_is_the_one_the_readme_quotes";
    if !require_tool(test, "systemd-analyze") {
        return;
    }
    let unit = crate::root().join("deploy/systemd").join(SERVICE);
    let (_, out) = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(OsStr::new(&unit)));
    let score = out
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for boundary-agent.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("an overall exposure level in:\n{out}"));
    let readme = fs::read_to_string(crate::root().join("README.md")).expect("README.md");
    assert!(
        readme.contains(&format!("exposure level **{score}**")),
        "README.md must quote the unit's exposure level, now {score}"
    );
}
