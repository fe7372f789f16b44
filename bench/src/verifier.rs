//! Step 5: the verifier budget. Instructions the verifier processed and JIT image size for each
//! of Boundary's programs, as the agent loads them (`Datapath::program_stats`).

use boundary_agent::datapath::Datapath;

use super::results::ProgramRow;

pub fn run() -> anyhow::Result<Vec<ProgramRow>> {
    let mut dp = Datapath::load_unpinned(boundary_common::maps::MAX_WORKLOADS)?;
    Ok(dp
        .program_stats()
        .into_iter()
        .map(|p| ProgramRow {
            program: p.name.to_owned(),
            verified_insns: p.verified_insns,
            jited_bytes: p.jited_bytes,
        })
        .collect())
}
