//! Rebuild when bpf-linker changes (it is the linker of the `bpfel-unknown-none` target, and
//! cargo does not otherwise know that a new linker means a new object).
fn main() {
    println!("cargo::rerun-if-env-changed=PATH");
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo::rerun-if-changed={}", linker.display());
    }
}
