//! Progress on stderr (stdout carries the table or the JSON): a line per step with the time
//! since the start, and a single rewritten status line for fine-grained ticks on a terminal.

use std::{
    io::{IsTerminal as _, Write as _},
    sync::OnceLock,
    time::Instant,
};

static START: OnceLock<Instant> = OnceLock::new();

pub fn start() {
    START.get_or_init(Instant::now);
}

fn elapsed() -> f64 {
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// A new step.
pub fn step(msg: &str) {
    done();
    eprintln!("[{:6.1} s] {msg}", elapsed());
}

/// A detail of the current step.
pub fn note(msg: &str) {
    done();
    eprintln!("           {msg}");
}

/// A fine-grained status: rewritten in place on a terminal, one line each otherwise.
pub fn tick(msg: &str) {
    let mut err = std::io::stderr();
    if err.is_terminal() {
        let line: String = format!("[{:6.1} s] {msg}", elapsed())
            .chars()
            .take(118)
            .collect();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    } else {
        eprintln!("[{:6.1} s] {msg}", elapsed());
    }
}

/// Ends a line of ticks.
pub fn done() {
    let mut err = std::io::stderr();
    if err.is_terminal() {
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
}
