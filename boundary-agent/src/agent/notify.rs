//! Telling the service manager how the agent is doing: systemd's `sd_notify` protocol, one
//! datagram of `KEY=VALUE` lines to the `AF_UNIX` socket `$NOTIFY_SOCKET` names (a path, or an
//! abstract name written with a leading `@`). Without the variable every call does nothing,
//! so the agent behaves the same outside systemd. A send that fails is logged and otherwise
//! ignored: the datapath does not depend on the service manager hearing about it.
//!
//! A few lines over std rather than the `sd-notify` crate, whose 0.5 sends to paths only.
//! Protocol: `sd_notify(3)`; `Type=notify` and `Type=notify-reload`: `systemd.service(5)`.

use std::{
    ffi::OsString,
    io,
    os::{
        linux::net::SocketAddrExt as _,
        unix::{
            ffi::OsStrExt as _,
            net::{SocketAddr, UnixDatagram},
        },
    },
};

use tracing::warn;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Where notifications go, read from `$NOTIFY_SOCKET` once.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; a notifier that sends nothing when it is unset or unusable.
    pub fn from_env() -> Self {
        let Some(value) = std::env::var_os(NOTIFY_SOCKET) else {
            return Self { target: None };
        };
        match address(&value).and_then(|addr| Ok((UnixDatagram::unbound()?, addr))) {
            Ok(target) => Self {
                target: Some(target),
            },
            Err(e) => {
                warn!(NOTIFY_SOCKET = ?value, error = %e, "not notifying the service manager");
                Self { target: None }
            }
        }
    }

    /// Enforcing: the policy is applied and every interface attached.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}\n"));
    }

    /// A reload starts; `ready` says it is over (whether or not the new policy was taken).
    /// `MONOTONIC_USEC` is what `Type=notify-reload` (systemd 253) matches the reload with.
    pub fn reloading(&self) {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() * 1_000_000 + t.tv_nsec() / 1_000)
            .unwrap_or_default();
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={now}\nSTATUS=reloading the policy\n"
        ));
    }

    /// Shutting down (the datapath stays pinned and enforcing).
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping; the pinned datapath keeps enforcing\n");
    }

    fn send(&self, message: &str) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
            warn!(error = %e, "could not notify the service manager");
        }
    }
}

/// The socket address `$NOTIFY_SOCKET` names: `/path` or `@abstract-name`.
fn address(value: &OsString) -> io::Result<SocketAddr> {
    match value.as_bytes() {
        [b'@', name @ ..] => SocketAddr::from_abstract_name(name),
        [b'/', ..] => SocketAddr::from_pathname(value),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor an @abstract name",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn received(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn notifier_for(addr: &SocketAddr) -> Notifier {
        Notifier {
            target: Some((UnixDatagram::unbound().expect("socket"), addr.clone())),
        }
    }

    #[test]
    fn a_path_and_an_abstract_name_are_both_addresses() {
        let dir = std::env::temp_dir().join(format!("boundary-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let by_path = UnixDatagram::bind(&path).expect("bind a path");
        let addr = address(&path.clone().into_os_string()).expect("a path is an address");
        notifier_for(&addr).ready("enforcing");
        assert_eq!(received(&by_path), "READY=1\nSTATUS=enforcing\n");
        std::fs::remove_dir_all(&dir).expect("remove temp dir");

        let name = format!("boundary-notify-test-{}", std::process::id());
        let abstract_addr = SocketAddr::from_abstract_name(&name).expect("abstract name");
        let by_name = UnixDatagram::bind_addr(&abstract_addr).expect("bind an abstract name");
        let addr = address(&format!("@{name}").into()).expect("@name is an address");
        notifier_for(&addr).stopping();
        assert!(received(&by_name).starts_with("STOPPING=1\n"));
    }

    #[test]
    fn a_reload_carries_the_monotonic_time() {
        let name = format!("boundary-notify-reload-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(&name).expect("abstract name");
        let socket = UnixDatagram::bind_addr(&addr).expect("bind");
        notifier_for(&addr).reloading();
        let message = received(&socket);
        let usec: u64 = message
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .expect("MONOTONIC_USEC")
            .parse()
            .expect("a number");
        assert!(
            message.starts_with("RELOADING=1\n") && usec > 0,
            "{message}"
        );
    }

    #[test]
    fn a_relative_name_is_refused() {
        assert!(address(&"notify.sock".into()).is_err());
        assert!(address(&"".into()).is_err());
    }
}
