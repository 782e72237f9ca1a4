//! A real DoT resolver (Debian's unbound) serving the fixture zone.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::paths::{fixture, free_port};
use crate::process::{LogBuf, Running, wait_until};

/// Path of the unbound binary (Debian package `unbound`).
const UNBOUND: &str = "/usr/sbin/unbound";
/// The log line unbound prints (at verbosity 1) once it serves.
const READY_LINE: &str = "start of service";
/// How long unbound may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Which fixture certificate chain (from `fixtures/pki/`) the resolver presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// `dot-test.chain.pem`: leaf for `dot.test` (and IP 127.0.0.1) + intermediate;
    /// verifies against `root.pem`.
    DotTest,
    /// `other-test.chain.pem`: leaf for `other.test` + intermediate (wrong name for
    /// `dot.test`, same trusted root).
    OtherTest,
    /// `expired-dot-test.chain.pem`: expired leaf for `dot.test` + intermediate.
    Expired,
    /// `evil-dot-test.chain.pem`: leaf for `dot.test` signed by the unrelated
    /// `evil-root.pem` (+ that root).
    Evil,
}

impl Chain {
    /// Every chain, for tests that loop over them.
    pub const ALL: [Chain; 4] = [
        Chain::DotTest,
        Chain::OtherTest,
        Chain::Expired,
        Chain::Evil,
    ];

    /// The fixture base name of the leaf (also its name in `pins.txt`).
    pub fn leaf_name(self) -> &'static str {
        match self {
            Chain::DotTest => "dot-test",
            Chain::OtherTest => "other-test",
            Chain::Expired => "expired-dot-test",
            Chain::Evil => "evil-dot-test",
        }
    }

    /// The name of the issuing CA certificate in `pins.txt` (`intermediate` or `evil-root`).
    pub fn issuer_name(self) -> &'static str {
        match self {
            Chain::Evil => "evil-root",
            _ => "intermediate",
        }
    }

    /// The DNS name in the leaf certificate.
    pub fn hostname(self) -> &'static str {
        match self {
            Chain::OtherTest => "other.test",
            _ => "dot.test",
        }
    }

    /// The PEM file of the chain the server sends (leaf first).
    pub fn chain_path(self) -> PathBuf {
        fixture(format!("pki/{}.chain.pem", self.leaf_name()))
    }

    /// The leaf's private key.
    pub fn key_path(self) -> PathBuf {
        fixture(format!("pki/{}.key", self.leaf_name()))
    }
}

/// A running unbound that serves DNS-over-TLS on `127.0.0.1:<free port>` with the zone
/// in `fixtures/zone/dot.test.conf` (see [`crate::zone`]), no DNSSEC validation and no
/// recursion (names outside `dot.test.` are REFUSED).
///
/// Dropping it kills the process it started (by PID) and removes its temp directory.
pub struct Unbound {
    chain: Chain,
    port: u16,
    dir: tempfile::TempDir,
    config: PathBuf,
    log: LogBuf,
    child: Option<Running>,
}

impl Unbound {
    /// Starts unbound presenting `chain` and waits (up to 10 s) until it serves.
    /// Panics with unbound's output if it does not start.
    pub fn start(chain: Chain) -> Self {
        Self::start_with(chain, "")
    }

    /// Like [`Unbound::start`], with extra lines appended to the `server:` clause
    /// (e.g. `"tcp-idle-timeout: 500\n"`).
    pub fn start_with(chain: Chain, extra_server_config: &str) -> Self {
        assert!(
            Path::new(UNBOUND).exists(),
            "{UNBOUND} not found: install Debian's `unbound` package"
        );
        let dir = tempfile::Builder::new()
            .prefix("spec-unbound-")
            .tempdir()
            .expect("create a temp dir for unbound");
        let port = free_port();
        let config = dir.path().join("unbound.conf");
        let text = config_text(chain, port, dir.path(), extra_server_config);
        std::fs::write(&config, text).expect("write unbound.conf");
        let mut me = Self {
            chain,
            port,
            dir,
            config,
            log: LogBuf::default(),
            child: None,
        };
        me.start_again();
        me
    }

    /// The DoT address (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The DoT port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The chain this resolver presents.
    pub fn chain(&self) -> Chain {
        self.chain
    }

    /// The generated `unbound.conf`.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Everything unbound has printed so far (across restarts).
    pub fn log(&self) -> String {
        self.log.get()
    }

    /// The PID of the running unbound, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Running::pid)
    }

    /// Stops unbound (SIGTERM, then SIGKILL after 3 s): a dead upstream. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.terminate(Duration::from_secs(3));
        }
    }

    /// Starts unbound again on the same port with the same config (after [`Unbound::stop`]);
    /// does nothing if it is running. Panics with its output if it does not start.
    pub fn start_again(&mut self) {
        if self.child.is_some() {
            return;
        }
        let ready_before = self.log.count(READY_LINE);
        let mut cmd = Command::new(UNBOUND);
        cmd.arg("-d")
            .arg("-c")
            .arg(&self.config)
            .current_dir(self.dir.path());
        let mut child =
            Running::spawn(cmd, &self.log).unwrap_or_else(|e| panic!("cannot run {UNBOUND}: {e}"));
        let log = self.log.clone();
        let mut exited = None;
        let ready = wait_until(START_TIMEOUT, || {
            exited = child.try_status();
            exited.is_some() || log.count(READY_LINE) > ready_before
        });
        if !ready || exited.is_some() {
            child.kill();
            panic!(
                "unbound ({:?}) did not start on {} within {START_TIMEOUT:?} (exit: {exited:?}); \
                 config {}; output:\n{}",
                self.chain,
                self.addr(),
                self.config.display(),
                self.log.get()
            );
        }
        self.child = Some(child);
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }
}

/// The generated unbound configuration.
fn config_text(chain: Chain, port: u16, dir: &Path, extra: &str) -> String {
    let mut s = String::new();
    let q = |p: &Path| format!("\"{}\"", p.display());
    // Writing into a String cannot fail.
    let _ = write!(
        s,
        "server:\n\
         \x20 interface: 127.0.0.1@{port}\n\
         \x20 tls-port: {port}\n\
         \x20 tls-service-key: {key}\n\
         \x20 tls-service-pem: {pem}\n\
         \x20 do-daemonize: no\n\
         \x20 username: \"\"\n\
         \x20 chroot: \"\"\n\
         \x20 use-syslog: no\n\
         \x20 logfile: \"\"\n\
         \x20 verbosity: 1\n\
         \x20 directory: {dir}\n\
         \x20 pidfile: \"\"\n\
         \x20 do-ip6: no\n\
         \x20 num-threads: 1\n\
         \x20 so-reuseport: no\n\
         \x20 interface-automatic: no\n\
         \x20 incoming-num-tcp: 100\n\
         \x20 access-control: 127.0.0.0/8 allow\n\
         \x20 module-config: \"iterator\"\n\
         \x20 include: {zone}\n",
        key = q(&chain.key_path()),
        pem = q(&chain.chain_path()),
        dir = q(dir),
        zone = q(&fixture("zone/dot.test.conf")),
    );
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        let _ = writeln!(s, "  {}", line.trim());
    }
    s
}
