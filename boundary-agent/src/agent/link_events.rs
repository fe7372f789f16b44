//! The agent's ear on the link table: an rtnetlink subscription (`RTMGRP_LINK`) driven from
//! the agent's tokio loop, which wakes the loop when links appear, change or vanish, so that
//! an interface is attached milliseconds after it appears rather than at the next poll.

use std::io;

use tokio::io::{Interest, unix::AsyncFd};

use crate::datapath::rtnetlink::{Changes, LinkSubscription};

pub struct LinkEvents(AsyncFd<LinkSubscription>);

impl LinkEvents {
    /// Registers `subscription` (opened before the first dump, so that no change between the
    /// two is missed) with the running tokio runtime.
    pub fn new(subscription: LinkSubscription) -> io::Result<Self> {
        #[expect(
            unsafe_code,
            reason = "tokio's AsyncFd::register is unsafe (I/O safety)"
        )]
        // SAFETY: the subscription owns its socket (an `OwnedFd`) and closes it only when
        // dropped, with the AsyncFd; its `as_raw_fd` always returns that one descriptor.
        let registered =
            unsafe { AsyncFd::register_with_interest(subscription, Interest::READABLE) };
        registered.map(Self).map_err(io::Error::from)
    }

    /// Waits for link messages and reads all that are waiting (one reconcile answers a burst).
    /// Cancel-safe: nothing is read until the socket is readable, and then without waiting.
    pub async fn next(&mut self) -> io::Result<Changes> {
        loop {
            let mut guard = self.0.readable_mut().await?;
            let changes = guard.get_inner_mut().drain()?;
            // drain() read until EAGAIN: the socket is empty now.
            guard.clear_ready();
            if changes.events > 0 || changes.overflowed {
                return Ok(changes);
            }
        }
    }
}
