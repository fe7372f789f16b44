use boundary_agent::datapath::{Datapath, LoadOptions};
#[test]
fn vstat() {
    for level in [boundary_agent::config::KernelLog::Off, boundary_agent::config::KernelLog::Debug] {
        let options = LoadOptions { max_workloads: 256, kernel_log: level, ..Default::default() };
        let mut dp = Datapath::load_with(None, &options).expect("load");
        for s in dp.program_stats() {
            println!("VSTAT {level:?} {} {:?} {:?} {}", s.name, s.verified_insns, s.xlated_bytes, s.jited_bytes);
        }
    }
}
