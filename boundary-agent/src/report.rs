//! An error and its causes on one line, for the log and the terminal.

use std::error::Error;

/// The error and each cause, joined by ": ". A cause whose text the message before already
/// quotes (many errors here print their source) is not repeated.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("quoting: {0}")]
    struct Quoting(#[source] std::io::Error);

    #[test]
    fn causes_are_joined_once() {
        let io = || std::io::Error::other("disk on fire");
        assert_eq!(chain(&Outer(io())), "outer: disk on fire");
        assert_eq!(chain(&Quoting(io())), "quoting: disk on fire");
    }
}
