//! The systemd notification protocol (`sd_notify`): readiness, status lines and the
//! watchdog, sent as datagrams to `$NOTIFY_SOCKET`. The settings are read from the
//! environment once, by the command that starts the appliance, so that tests can give an
//! in-process appliance its own socket.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct SystemdNotify {
    socket: String,
    /// How often systemd expects `WATCHDOG=1` (WatchdogSec=), if at all.
    pub watchdog: Option<Duration>,
}

impl SystemdNotify {
    pub fn new(socket: impl Into<String>, watchdog: Option<Duration>) -> Self {
        Self {
            socket: socket.into(),
            watchdog,
        }
    }

    /// Settings from `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, when this
    /// process runs under systemd with `Type=notify`.
    pub fn from_env() -> Option<Self> {
        let socket = std::env::var("NOTIFY_SOCKET").ok()?;
        let pid_matches = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|pid| pid.parse() == Ok(std::process::id()));
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.parse().ok())
            .filter(|_| pid_matches)
            .map(Duration::from_micros);
        Some(Self::new(socket, watchdog))
    }

    /// Sends one notification (`READY=1`, `STATUS=…`, `WATCHDOG=1`, `STOPPING=1`).
    /// Failures are logged, never fatal: the service works without systemd.
    pub fn send(&self, message: &str) {
        let result = UnixDatagram::unbound().and_then(|socket| {
            if let Some(name) = self.socket.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                socket.send_to_addr(message.as_bytes(), &addr)
            } else {
                socket.send_to(message.as_bytes(), PathBuf::from(&self.socket))
            }
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }
}
