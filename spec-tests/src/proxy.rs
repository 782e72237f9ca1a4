//! The real `dnsproxy` host binary, started as a child process.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::container::Resolver;
use crate::paths::{fixture, free_port, native_build};
use crate::process::{LogBuf, Running, wait_until};

/// What the component's line saying its sockets are bound holds, in the text
/// format (`INFO dnsproxy::component: serving listen=...`) and in JSON
/// (`"message":"serving"`). Not the host's earlier `serving metrics at ...`
/// line: a test that took that for readiness raced the component's bind.
const READY_WORDS: [&str; 2] = ["serving listen=", "\"serving\""];

/// Whether `log` says the proxy's sockets are bound.
fn says_ready(log: &str) -> bool {
    READY_WORDS.iter().any(|w| log.contains(w))
}
/// How long the proxy may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Time between SIGTERM and SIGKILL on drop.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// A running `dnsproxy`, configured only through the environment and arguments given.
///
/// The child gets an empty environment plus `PATH` and the given variables, and
/// `--config <empty temp file>` (unless the arguments contain `--config`), so the repo's
/// `settings.ini` is never read. Defaults added when not given: `LOCAL_HOST=127.0.0.1`,
/// `LOCAL_PORT=<free port>`, `LOG_LEVEL=info` (readiness needs the info-level `serving`
/// line), and `CACHE_SIZE_MIB=0`: the groups that test forwarding count what reaches
/// the upstream, so the answer cache is off unless a test sets the variable (the
/// `cache` group sets it empty, for the built-in default); and `HEDGE_PERCENT=0`
/// for the same reason: a hedge would send a query to a second upstream whenever the
/// machine is slow for a moment (the `strategies` group turns hedging on); and
/// `WORKERS=1`: the groups count connections, restarts and limits of one instance, and
/// with several the kernel picks which one a client reaches (the `workers` group runs
/// two). stdout and stderr are captured continuously (see [`Proxy::log`]).
///
/// Dropping it sends SIGTERM to the child's PID, waits up to 3 s, then kills it.
pub struct Proxy {
    child: Running,
    addr: SocketAddr,
    log: LogBuf,
    /// Whether the harness picked `LOCAL_PORT` (and may pick another one).
    port_chosen: bool,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// The binary under test: `$DNSPROXY_BIN`, else the one `make build-host`
    /// builds, `<target dir>/x86_64-unknown-linux-musl/release/dnsproxy`: what is
    /// shipped, not the test build's own (`release-tests/`, without LTO).
    pub fn binary() -> PathBuf {
        match std::env::var_os("DNSPROXY_BIN").filter(|p| !p.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => native_build("release", "dnsproxy"),
        }
    }

    /// Starts [`Proxy::binary`] and waits (up to 10 s) until its log says `serving`.
    /// Panics with the log if it exits first or does not get ready in time, and with a
    /// build hint if the binary is missing.
    pub fn start(envs: &[(impl AsRef<str>, impl AsRef<str>)], args: &[&str]) -> Self {
        Self::start_binary(&binary_checked(), envs, args)
    }

    /// Like [`Proxy::start`] with an explicit binary (used to test this harness).
    ///
    /// When the harness picked `LOCAL_PORT` and another process took that port
    /// between the pick and the proxy's bind (the proxy exits saying the address is in
    /// use), it starts again on a new port, up to 5 times.
    pub fn start_binary(
        bin: &Path,
        envs: &[(impl AsRef<str>, impl AsRef<str>)],
        args: &[&str],
    ) -> Self {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let mut me = Self::spawn(bin, envs, args);
            let log = me.log.clone();
            let child = &mut me.child;
            let mut exited = None;
            let ready = wait_until(START_TIMEOUT, || {
                exited = child.try_status();
                exited.is_some() || says_ready(&log.get())
            });
            if exited.is_none() && ready {
                return me;
            }
            me.child.kill();
            // Let the capture threads drain what the process wrote last.
            me.log.wait_drained(TERM_GRACE);
            let port_taken = me.port_chosen && me.log.get().to_lowercase().contains("in use");
            if exited.is_some() && port_taken && attempt < ATTEMPTS {
                continue;
            }
            panic!(
                "dnsproxy ({}) {} ; log:\n{}",
                bin.display(),
                match exited {
                    Some(s) => format!("exited before it was ready ({s})"),
                    None => format!("did not log {READY_WORDS:?} within {START_TIMEOUT:?}"),
                },
                me.log.get()
            );
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Runs [`Proxy::binary`] expecting it to exit (e.g. on bad config) and returns its
    /// exit code (`None` if killed by a signal or still running after `timeout`, in
    /// which case it is killed) and its complete output.
    pub fn run_to_exit(
        envs: &[(impl AsRef<str>, impl AsRef<str>)],
        args: &[&str],
        timeout: Duration,
    ) -> (Option<i32>, String) {
        Self::run_binary_to_exit(&binary_checked(), envs, args, timeout)
    }

    /// Like [`Proxy::run_to_exit`] with an explicit binary.
    pub fn run_binary_to_exit(
        bin: &Path,
        envs: &[(impl AsRef<str>, impl AsRef<str>)],
        args: &[&str],
        timeout: Duration,
    ) -> (Option<i32>, String) {
        let mut me = Self::spawn(bin, envs, args);
        let status = me.child.wait_within(timeout).or_else(|| {
            me.child.kill();
            None
        });
        // Output pipes close at exit; wait for the capture threads to read their ends.
        me.log.wait_drained(TERM_GRACE);
        (status.and_then(|s| s.code()), me.log.get())
    }

    fn spawn(bin: &Path, envs: &[(impl AsRef<str>, impl AsRef<str>)], args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("spec-proxy-")
            .tempdir()
            .expect("create a temp dir for the proxy");
        let empty_config = dir.path().join("empty.ini");
        std::fs::write(&empty_config, "").expect("write an empty settings file");

        let mut vars: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        let get = |vars: &[(String, String)], key: &str| {
            vars.iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        if get(&vars, "LOCAL_HOST").is_none() {
            vars.push(("LOCAL_HOST".into(), "127.0.0.1".into()));
        }
        let port_chosen = get(&vars, "LOCAL_PORT").is_none();
        if port_chosen {
            vars.push(("LOCAL_PORT".into(), free_port().to_string()));
        }
        if get(&vars, "LOG_LEVEL").is_none() {
            vars.push(("LOG_LEVEL".into(), "info".into()));
        }
        if get(&vars, "CACHE_SIZE_MIB").is_none() {
            vars.push(("CACHE_SIZE_MIB".into(), "0".into()));
        }
        if get(&vars, "HEDGE_PERCENT").is_none() {
            vars.push(("HEDGE_PERCENT".into(), "0".into()));
        }
        if get(&vars, "WORKERS").is_none() {
            vars.push(("WORKERS".into(), "1".into()));
        }
        let ip = get(&vars, "LOCAL_HOST")
            .and_then(|h| h.parse::<IpAddr>().ok())
            .filter(|ip| !ip.is_unspecified())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let port = get(&vars, "LOCAL_PORT")
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(0);

        let mut cmd = Command::new(bin);
        cmd.env_clear().current_dir(dir.path());
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.envs(vars);
        if !args
            .iter()
            .any(|a| *a == "--config" || a.starts_with("--config="))
        {
            cmd.arg("--config").arg(&empty_config);
        }
        cmd.args(args);
        let log = LogBuf::default();
        let child = Running::spawn(cmd, &log)
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        Self {
            child,
            addr: SocketAddr::new(ip, port),
            log,
            port_chosen,
            _dir: dir,
        }
    }

    /// The address clients query (UDP and TCP): `LOCAL_HOST:LOCAL_PORT`, with
    /// 127.0.0.1 for an empty or wildcard host.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Sends the signal named `name` (`HUP`) to the proxy's PID.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Everything the proxy has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        self.log.get()
    }

    /// How many lines of the log so far contain `substr`.
    pub fn log_lines_with(&self, substr: &str) -> usize {
        self.log
            .get()
            .lines()
            .filter(|l| l.contains(substr))
            .count()
    }

    /// The proxy's resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
    /// Panics if the process is gone or the file cannot be read.
    pub fn rss_kib(&self) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {path} (has the proxy exited?): {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS line in {path}:\n{status}"))
    }

    /// How many file descriptors the proxy has open (entries of `/proc/<pid>/fd`).
    pub fn open_fds(&self) -> usize {
        let path = format!("/proc/{}/fd", self.pid());
        std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("cannot list {path}: {e}"))
            .count()
    }

    /// Waits up to `timeout` for `substr` to appear in the log; returns whether it did.
    pub fn wait_for_log(&self, substr: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log.get().contains(substr))
    }

    /// Waits up to `timeout` for the proxy to exit on its own; `None` if still running.
    pub fn exit_status_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.wait_within(timeout)
    }

    /// Sends SIGTERM, waits up to 3 s, then kills; returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.child.terminate(TERM_GRACE)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.child.terminate(TERM_GRACE);
    }
}

/// The proxy's upstream settings for one resolver: `TLS_HOST=127.0.0.1`,
/// `TLS_PORT=<its published port>`, `TLS_HOSTNAME=dot.test`, `TLS_CA_FILE=fixtures/pki/root.pem`.
/// Append `SPKI`, `LOG_LEVEL`, ... as needed and pass to [`Proxy::start`].
pub fn upstream_env(resolver: &dyn Resolver) -> Vec<(String, String)> {
    upstreams_env(&[resolver], &[])
}

/// `env` with each of `extra` set, replacing a setting of the same key.
pub fn with_settings(
    mut env: Vec<(String, String)>,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    env
}

/// The proxy's settings for several upstreams, tried in order (see [`upstream_env`]),
/// then `extra` settings (each replacing the one of the same key).
pub fn upstreams_env(upstreams: &[&dyn Resolver], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let join = |f: &dyn Fn(SocketAddr) -> String| {
        upstreams
            .iter()
            .map(|u| f(u.addr()))
            .collect::<Vec<_>>()
            .join(",")
    };
    let env = vec![
        ("TLS_HOST".to_string(), join(&|a| a.ip().to_string())),
        ("TLS_PORT".to_string(), join(&|a| a.port().to_string())),
        ("TLS_HOSTNAME".to_string(), "dot.test".to_string()),
        (
            "TLS_CA_FILE".to_string(),
            fixture("pki/root.pem").display().to_string(),
        ),
    ];
    with_settings(env, extra)
}

impl Proxy {
    /// Starts the proxy with `env` (see [`Proxy::start`]) and its metrics
    /// endpoint on a free port, and returns that address too.
    pub fn start_with_metrics(env: Vec<(String, String)>) -> (Self, SocketAddr) {
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let env = with_settings(env, &[("METRICS_LISTEN", &metrics.to_string())]);
        (Self::start(&env, &[]), metrics)
    }

    /// The value of the sample `name` with `labels` on the metrics endpoint
    /// at `metrics`, once `want` holds for it (the component reports about
    /// once a second, each worker on its own), read for up to 5 s; panics
    /// with the exposition and the proxy's log if it never does.
    pub fn metric_when(
        &self,
        metrics: SocketAddr,
        name: &str,
        labels: &[&str],
        want: impl Fn(f64) -> bool,
    ) -> f64 {
        let mut last = f64::NAN;
        let mut body = String::new();
        let ok = wait_until(Duration::from_secs(5), || {
            body = crate::scrape::get(metrics, "/metrics").1;
            last = crate::scrape::value(&body, name, labels)
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            want(last)
        });
        assert!(
            ok,
            "{name}{labels:?} = {last}, not as expected:\n{body}\n{}",
            self.log()
        );
        last
    }

    /// Starts the proxy in front of `upstreams` (in order) with `extra` settings.
    pub fn in_front_of(upstreams: &[&dyn Resolver], extra: &[(&str, &str)]) -> Self {
        Self::start(&upstreams_env(upstreams, extra), &[])
    }
}

/// Runs `dnsproxy spki` against a live DoT server at `addr` for the name
/// `dot.test`, trusting the fixture root.
pub fn run_spki(addr: SocketAddr) -> std::process::Output {
    Command::new(binary_checked())
        .args([
            "spki",
            "--host",
            &addr.ip().to_string(),
            "--port",
            &addr.port().to_string(),
        ])
        .args(["--name", "dot.test", "--ca-file"])
        .arg(fixture("pki/root.pem"))
        .output()
        .expect("run dnsproxy spki")
}

/// [`Proxy::binary`], or a panic saying how to build it.
fn binary_checked() -> PathBuf {
    let bin = Proxy::binary();
    assert!(
        bin.is_file(),
        "dnsproxy binary not found at {}: build it with `make build-host` first \
         (or set DNSPROXY_BIN to its path)",
        bin.display()
    );
    bin
}
