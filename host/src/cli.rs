//! The command line: `dnsproxy [run] [OPTIONS]`, `dnsproxy check [OPTIONS]`,
//! `dnsproxy spki ...`, `dnsproxy health [--ready]`, `dnsproxy top` and the
//! hidden `dnsproxy precompile --out PATH` and `dnsproxy generate
//! completions|man` (see [`crate::generate`]).
//!
//! Run flags are plain strings on purpose: the config module validates every
//! layer (file, env, flags) the same way and reports errors in the same form.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};
use clap_complete::Shell;

use crate::config::{self, Key};
use crate::query_name::{QueryName, parse_name};

/// Top-level help, after the option list.
const AFTER_HELP: &str = "\
Settings are layered, later wins: built-in defaults, then the config file, then \
environment variables named like the keys in capitals (TLS_HOST, QUERY_TIMEOUT, ...), \
then these flags. TLS_HOST in the environment or as a flag replaces every upstream of \
the file: its TLS_PORT, TLS_HOSTNAME, SPKI and TLS_CA_FILE come from the same layer or \
above, never from the file. Without TLS_HOST, those four apply to every upstream of the \
file. An upstream without TLS_HOSTNAME is verified by its IP address (the certificate \
must carry it). Durations take 4s, 1500ms, 1.5s or a number of seconds. Bad \
configuration exits with status 64 and one line saying what is wrong (see `dnsproxy check`).

Examples:
  dnsproxy --config /etc/dnsproxy/settings.ini
  dnsproxy --tls-host 9.9.9.9,149.112.112.112 --tls-hostname dns.quad9.net
  dnsproxy --tls-host 8.8.8.8 --spki <pin from `dnsproxy spki --host 8.8.8.8`>
  dnsproxy spki --host 9.9.9.9 --name dns.quad9.net";

/// `check --help`, after the option list.
const CHECK_AFTER_HELP: &str = "\
Takes the same config file, environment variables and flags as run, validates every value \
(CA bundles included) and prints one line per setting: key, value, and where the value \
came from (default, FILE:LINE, env VAR or flag --FLAG), one block per upstream, then \
\"config OK\". Binds nothing and connects nowhere. Exits 0 when the configuration is \
valid, 64 with one line saying what is wrong otherwise.

Examples:
  dnsproxy check --config /etc/dnsproxy/settings.ini
  TLS_HOST=8.8.8.8 dnsproxy check";

/// Help heading of the `[LOCAL_SERVER]` flags.
const LOCAL: &str = "Local server [LOCAL_SERVER]";
/// Help heading of the `[TLS_SERVER]` flags.
const UPSTREAMS: &str = "Upstreams [TLS_SERVER]";
/// Help heading of the `[PROXY]` flags.
const TUNABLES: &str = "Tunables [PROXY]";

/// dnsproxy: answers plain DNS from local clients and forwards every query over
/// DNS-over-TLS, checking the resolver's certificate and optional SPKI pins.
#[derive(Debug, Parser)]
#[command(
    name = "dnsproxy",
    version,
    args_conflicts_with_subcommands = true,
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The run flags, accepted without the `run` subcommand.
    #[command(flatten)]
    pub run: RunArgs,
}

impl Cli {
    /// The subcommand to execute: `run` with the top-level flags if none was given.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Run(self.run))
    }
}

/// Parses `std::env::args`, printing help or a usage error and exiting as clap does.
pub fn parse() -> Cli {
    Cli::parse()
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // built once per process
pub enum Command {
    /// Run the proxy (the default)
    #[command(after_help = AFTER_HELP)]
    Run(RunArgs),
    /// Validate the configuration as `run` would, without binding or connecting, and print
    /// each effective setting with where it came from
    #[command(after_help = CHECK_AFTER_HELP)]
    Check(RunArgs),
    /// Print the SPKI pins of a resolver's certificate chain, for `spki =`
    Spki(SpkiArgs),
    /// Check that a running proxy answers (liveness) or reaches an upstream (--ready)
    Health(HealthArgs),
    /// Watch a running proxy live: qps, rcodes, latency and upstreams, from its metrics
    Top(TopArgs),
    /// Write the ahead-of-time compiled proxy component to a file
    #[command(hide = true)]
    Precompile(PrecompileArgs),
    /// Write shell completions or the man pages (make install)
    #[command(hide = true)]
    Generate(GenerateArgs),
}

/// Flags of `run`: one per settings.ini key, each overriding the file and the
/// environment.
#[derive(Debug, Default, Clone, Args)]
pub struct RunArgs {
    /// Config file [default: ./settings.ini if it exists]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Addresses to answer clients on, comma-separated (0.0.0.0, :: for IPv4 and IPv6) [env: LOCAL_HOST] [default: 0.0.0.0]
    #[arg(long, value_name = "IPS", help_heading = LOCAL)]
    pub local_host: Option<String>,

    /// UDP and TCP port to answer clients on [env: LOCAL_PORT] [default: 53]
    #[arg(long, value_name = "PORT", help_heading = LOCAL)]
    pub local_port: Option<String>,

    /// Client networks allowed to query, comma-separated CIDRs or addresses; others get no answer
    /// [env: ALLOW_NETWORKS] [default: loopback and private ranges]
    #[arg(long, value_name = "NETS", help_heading = LOCAL)]
    pub allow_networks: Option<String>,

    /// Resolver IP address(es), comma-separated in priority order; not host names [env: TLS_HOST]
    #[arg(long, value_name = "IPS", help_heading = UPSTREAMS)]
    pub tls_host: Option<String>,

    /// Resolver port(s), one for all or one per host [env: TLS_PORT] [default: 853]
    #[arg(long, value_name = "PORTS", help_heading = UPSTREAMS)]
    pub tls_port: Option<String>,

    /// Name(s) verified in the certificate and sent as SNI, one for all or one per host; none:
    /// verified by IP address [env: TLS_HOSTNAME]
    #[arg(long, value_name = "NAMES", help_heading = UPSTREAMS)]
    pub tls_hostname: Option<String>,

    /// Base64 SHA-256 SPKI pins, comma-separated; a chain passes if any of its certificates has
    /// one; empty for CA validation only (see `dnsproxy spki`) [env: SPKI]
    #[arg(long, value_name = "PINS", help_heading = UPSTREAMS)]
    pub spki: Option<String>,

    /// PEM bundle to trust instead of the built-in web roots [env: TLS_CA_FILE]
    #[arg(long, value_name = "FILE", help_heading = UPSTREAMS)]
    pub tls_ca_file: Option<String>,

    /// Deadline of every client query, 100ms to 60s [env: QUERY_TIMEOUT] [default: 4s]
    #[arg(long, value_name = "DURATION", help_heading = TUNABLES)]
    pub query_timeout: Option<String>,

    /// Time one upstream gets before the next is tried, 50ms to 30s and at most the query timeout
    /// [env: UPSTREAM_TIMEOUT] [default: 1500ms]
    #[arg(long, value_name = "DURATION", help_heading = TUNABLES)]
    pub upstream_timeout: Option<String>,

    /// Close idle client TCP connections after this, 1s to 300s (RFC 7766 6.2.3); a tenth
    /// of it past half of max_tcp_clients, a hundredth past three quarters (at least 200ms)
    /// [env: TCP_IDLE_TIMEOUT] [default: 10s]
    #[arg(long, value_name = "DURATION", help_heading = TUNABLES)]
    pub tcp_idle_timeout: Option<String>,

    /// Close idle upstream TLS connections after this, 1s to 3600s [env: UPSTREAM_IDLE_TIMEOUT]
    /// [default: 30s]
    #[arg(long, value_name = "DURATION", help_heading = TUNABLES)]
    pub upstream_idle_timeout: Option<String>,

    /// The order upstreams are tried in: priority (file order, the others are fallbacks),
    /// round_robin (each query starts at the next), or fastest (lowest smoothed RTT, probing the
    /// others one query in 20) [env: STRATEGY] [default: priority]
    #[arg(long, value_name = "STRATEGY", help_heading = TUNABLES)]
    pub strategy: Option<String>,

    /// Ask the next upstream too when one has not answered within its usual time, for at most
    /// this percentage of queries, 0 (off) to 50 [env: HEDGE_PERCENT] [default: 5]
    #[arg(long, value_name = "PERCENT", help_heading = TUNABLES)]
    pub hedge_percent: Option<String>,

    /// Sandboxed proxy instances serving the same addresses, each on its own thread, 1 to 256, or
    /// auto: one per CPU the process may use (affinity and cgroup quota included); the limits
    /// below are for the whole process, each worker holds its share [env: WORKERS]
    /// [default: auto]
    #[arg(long, value_name = "N", help_heading = TUNABLES)]
    pub workers: Option<String>,

    /// Concurrent client TCP connections, 1 to 65535; at the limit the stalest connection makes
    /// room for a new one [env: MAX_TCP_CLIENTS] [default: 2048]
    #[arg(long, value_name = "N", help_heading = TUNABLES)]
    pub max_tcp_clients: Option<String>,

    /// Queries in flight over all clients, 1 to 65536; one source may hold a quarter of them once
    /// half are in use [env: MAX_INFLIGHT] [default: 2048]
    #[arg(long, value_name = "N", help_heading = TUNABLES)]
    pub max_inflight: Option<String>,

    /// Largest UDP answer to a client in bytes, 512 to 4096; larger answers are truncated with TC=1
    /// [env: MAX_UDP_SIZE] [default: 1232]
    #[arg(long, value_name = "BYTES", help_heading = TUNABLES)]
    pub max_udp_size: Option<String>,

    /// MiB of answers held for TCP clients that have not read them, over all clients, 1 to 256;
    /// at it no client is read from until answers drain [env: CLIENT_BUFFER_MIB] [default: 32]
    #[arg(long, value_name = "MIB", help_heading = TUNABLES)]
    pub client_buffer_mib: Option<String>,

    /// MiB of memory for cached answers, per worker, 0 to 4096; 0 turns the cache off. Fixed at
    /// start [env: CACHE_SIZE_MIB] [default: 16]
    #[arg(long, value_name = "MIB", help_heading = TUNABLES)]
    pub cache_size_mib: Option<String>,

    /// Cached TTLs are raised to at least this, 0 to 3600s; TTL 0 is never cached [env:
    /// CACHE_MIN_TTL] [default: 0]
    #[arg(long, value_name = "DURATION", help_heading = TUNABLES)]
    pub cache_min_ttl: Option<String>,

    /// Cached TTLs are lowered to at most this, 1s to 7 days [env: CACHE_MAX_TTL] [default:
    /// 86400s]
    #[arg(long, value_name = "DURATION", help_heading = TUNABLES)]
    pub cache_max_ttl: Option<String>,

    /// A question that failed on every upstream is answered SERVFAIL (or stale) for this long
    /// without asking again, 1s to 300s (RFC 9520) [env: CACHE_FAILURE_TTL] [default: 1s]
    #[arg(long, value_name = "DURATION", help_heading = TUNABLES)]
    pub cache_failure_ttl: Option<String>,

    /// When every upstream fails, answer from an expired entry up to this long past its TTL, with
    /// TTL 30 (RFC 8767); 0 to 3 days, 0: off [env: SERVE_STALE] [default: 86400s]
    #[arg(long, value_name = "DURATION", help_heading = TUNABLES)]
    pub serve_stale: Option<String>,

    /// Refresh names asked at least twice in the last tenth of their TTL: true or false [env:
    /// CACHE_PREFETCH] [default: true]
    #[arg(long, value_name = "BOOL", help_heading = TUNABLES)]
    pub cache_prefetch: Option<String>,

    /// error, warn, info, debug or trace [env: LOG_LEVEL] [default: info]
    #[arg(long, value_name = "LEVEL", help_heading = TUNABLES)]
    pub log_level: Option<String>,

    /// Log lines as text or json (one JSON object per line) [env: LOG_FORMAT] [default: text]
    #[arg(long, value_name = "FORMAT", help_heading = TUNABLES)]
    pub log_format: Option<String>,

    /// One log line per answered query (client, name, type, rcode, upstream, duration), whatever
    /// the log level: true or false [env: LOG_QUERIES] [default: false]
    #[arg(long, value_name = "BOOL", help_heading = TUNABLES)]
    pub log_queries: Option<String>,
    /// Serve Prometheus metrics, /health and /ready over HTTP on this address, e.g.
    /// 127.0.0.1:9153; empty: off [env: METRICS_LISTEN] [default: off]
    #[arg(long, value_name = "ADDR:PORT", help_heading = TUNABLES)]
    pub metrics_listen: Option<String>,

    /// Run this .wasm or .cwasm component instead of the embedded one (for tests)
    #[arg(long, value_name = "PATH", hide = true)]
    pub component: Option<PathBuf>,
}

/// Flags of `spki`: a live resolver (`--host`, optionally `--name`) or a PEM file.
#[derive(Debug, Clone, Args)]
#[command(
    group(ArgGroup::new("source").required(true).args(["host", "pem", "config"])),
    after_help = "Connects to the resolver, verifies its chain and name like the proxy \
                  does, and prints one pin per certificate of the chain. Pinning an \
                  intermediate or listing the next key too survives certificate \
                  rotation. With --pem, prints the pins of the certificates in FILE.

With --config, reads the configuration like `run` (the file, then the environment) \
and checks every upstream's live chain against its pin set: each configured pin \
either matches a certificate of the chain or is a backup (matches none), with a \
warning when no backup is left or only the leaf key is pinned. Pins stay enforced: \
check a new pin set this way before rolling it out. Exits 0 when the proxy would \
accept every upstream (chain verified, and a pin matches where pins are set), 1 \
otherwise, 64 on bad configuration.

Examples:
  dnsproxy spki --host 9.9.9.9 --name dns.quad9.net
  dnsproxy spki --config /etc/dnsproxy/settings.ini"
)]
pub struct SpkiArgs {
    /// Resolver IP address to connect to
    #[arg(long, value_name = "IP")]
    pub host: Option<IpAddr>,

    /// Resolver port
    #[arg(
        long,
        value_name = "PORT",
        default_value_t = 853,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub port: u16,

    /// Name to verify in the certificate and send as SNI (the tls_hostname); without it the
    /// certificate must carry the IP address
    #[arg(long, value_name = "DNS_NAME", requires = "host")]
    pub name: Option<String>,

    /// PEM bundle to trust instead of the built-in web roots (the tls_ca_file)
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Read certificates from this PEM file instead of connecting
    #[arg(long, value_name = "FILE", conflicts_with_all = ["host", "port", "name"])]
    pub pem: Option<PathBuf>,

    /// Check every upstream of this config file against its pin set
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with_all = ["host", "port", "name", "ca_file", "pem"]
    )]
    pub config: Option<PathBuf>,
}

/// Flags of `health`: where the proxy listens comes from the same layers as
/// for `run` (the file, LOCAL_HOST/LOCAL_PORT, these flags).
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Reads the configuration like `run` (--config, environment variables, the listen flags) \
and queries the proxy's listen address (127.0.0.1 or ::1 for a wildcard). Live: a query \
the proxy answers itself (OPCODE STATUS, NOTIMP) must be answered over UDP and over TCP; \
no upstream is involved. Ready (--ready): live, and a real query must get an answer \
other than SERVFAIL, i.e. the proxy reached an upstream. Exits 0 when healthy, 1 with \
one line on stderr saying what failed, 64 on bad configuration.

Examples (Kubernetes exec probes):
  dnsproxy health --config /etc/dnsproxy/settings.ini
  dnsproxy health --ready --config /etc/dnsproxy/settings.ini --timeout 3s")]
pub struct HealthArgs {
    /// Config file, as for run [default: ./settings.ini if it exists]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Address the proxy answers on, as for run [env: LOCAL_HOST] [default: 0.0.0.0]
    #[arg(long, value_name = "IP")]
    pub local_host: Option<String>,

    /// Port the proxy answers on, as for run [env: LOCAL_PORT] [default: 53]
    #[arg(long, value_name = "PORT")]
    pub local_port: Option<String>,

    /// Also require an answer from an upstream (readiness)
    #[arg(long)]
    pub ready: bool,

    /// Name queried (type NS) with --ready
    #[arg(long, value_name = "DNS_NAME", default_value = ".", value_parser = parse_name)]
    pub name: QueryName,

    /// Deadline of the whole check, 100ms to 60s
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

impl HealthArgs {
    /// The run flags these stand for, to load the configuration as `run` does.
    pub fn run_args(&self) -> RunArgs {
        RunArgs {
            config: self.config.clone(),
            local_host: self.local_host.clone(),
            local_port: self.local_port.clone(),
            ..RunArgs::default()
        }
    }
}

/// `health --timeout`: a duration as the settings take them, 100ms to 60s.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    config::parse_duration(text, Duration::from_millis(100), Duration::from_secs(60))
}

/// Flags of `top`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Reads the proxy's Prometheus metrics (served when metrics_listen is set) and shows, \
refreshing: answers per second, the RCODE mix, answer latency p50/p99 with their \
recent history, and for each upstream its state, RTT, queries per second, open \
connections, failures by check and days until the earliest expiry of its \
certificates. Rates and quantiles are over the last interval. q or Esc quits.

Without --url it reads metrics_listen from the configuration, like run (--config, \
environment variables); with metrics_listen off, http://127.0.0.1:9153/metrics.

Example:
  dnsproxy top --url http://127.0.0.1:9153/metrics")]
pub struct TopArgs {
    /// The metrics endpoint: http://HOST:PORT/metrics, or HOST:PORT as in metrics_listen [default: metrics_listen of the configuration]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// Config file whose metrics_listen to read, without --url [default: ./settings.ini if it exists]
    #[arg(long, value_name = "PATH", conflicts_with = "url")]
    pub config: Option<PathBuf>,

    /// Time between refreshes, 100ms to 60s
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_timeout)]
    pub interval: Duration,
}

/// Flags of `precompile`.
#[derive(Debug, Clone, Args)]
pub struct PrecompileArgs {
    /// Where to write the compiled component (.cwasm); a directory gets the
    /// name the proxy looks for, and `-` writes it to standard output (the
    /// proxy compiles in a child process this way)
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,

    /// Compile this .wasm component instead of the embedded one (for tests)
    #[arg(long, value_name = "PATH", hide = true)]
    pub component: Option<PathBuf>,
}

/// Flags of the hidden `generate` subcommand.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// What to write.
    #[command(subcommand)]
    pub what: Generated,
}

/// What `generate` writes.
#[derive(Debug, Clone, Subcommand)]
pub enum Generated {
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the man pages, dnsproxy.1 and one per subcommand, into DIR
    Man {
        /// The directory to write into (e.g. /usr/share/man/man1)
        dir: PathBuf,
    },
}

impl config::Flags for RunArgs {
    fn config_file(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    fn value(&self, key: Key) -> Option<&str> {
        let value = match key {
            Key::LocalHost => &self.local_host,
            Key::LocalPort => &self.local_port,
            Key::AllowNetworks => &self.allow_networks,
            Key::TlsHost => &self.tls_host,
            Key::TlsPort => &self.tls_port,
            Key::TlsHostname => &self.tls_hostname,
            Key::Spki => &self.spki,
            Key::TlsCaFile => &self.tls_ca_file,
            Key::QueryTimeout => &self.query_timeout,
            Key::UpstreamTimeout => &self.upstream_timeout,
            Key::TcpIdleTimeout => &self.tcp_idle_timeout,
            Key::UpstreamIdleTimeout => &self.upstream_idle_timeout,
            Key::Strategy => &self.strategy,
            Key::HedgePercent => &self.hedge_percent,
            Key::Workers => &self.workers,
            Key::MaxTcpClients => &self.max_tcp_clients,
            Key::MaxInflight => &self.max_inflight,
            Key::MaxUdpSize => &self.max_udp_size,
            Key::ClientBufferMib => &self.client_buffer_mib,
            Key::CacheSizeMib => &self.cache_size_mib,
            Key::CacheMinTtl => &self.cache_min_ttl,
            Key::CacheMaxTtl => &self.cache_max_ttl,
            Key::CacheFailureTtl => &self.cache_failure_ttl,
            Key::ServeStale => &self.serve_stale,
            Key::CachePrefetch => &self.cache_prefetch,
            Key::LogLevel => &self.log_level,
            Key::LogFormat => &self.log_format,
            Key::LogQueries => &self.log_queries,
            Key::MetricsListen => &self.metrics_listen,
        };
        value.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    use super::*;

    fn try_parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("dnsproxy").chain(args.iter().copied()))
            .map(Cli::into_command)
    }

    fn help(args: &[&str]) -> String {
        let cmd = Cli::command().term_width(100);
        let argv = std::iter::once("dnsproxy").chain(args.iter().copied());
        match cmd.try_get_matches_from(argv) {
            Err(e) if e.kind() == ErrorKind::DisplayHelp => e.to_string(),
            other => panic!("expected help, got {other:?}"),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_text() {
        insta::assert_snapshot!("help", help(&["--help"]));
    }

    #[test]
    fn spki_help_text() {
        insta::assert_snapshot!("spki_help", help(&["spki", "--help"]));
    }

    #[test]
    fn run_is_the_default_subcommand() {
        let Ok(Command::Run(args)) = try_parse(&["--tls-port", "8853", "--config", "x.ini"]) else {
            panic!("expected run");
        };
        assert_eq!(args.tls_port.as_deref(), Some("8853"));
        assert_eq!(args.config, Some(PathBuf::from("x.ini")));
        assert!(matches!(try_parse(&[]), Ok(Command::Run(_))));
    }

    #[test]
    fn explicit_run_takes_the_same_flags() {
        let Ok(Command::Run(args)) = try_parse(&["run", "--spki", "", "--log-level", "debug"])
        else {
            panic!("expected run");
        };
        assert_eq!(args.spki.as_deref(), Some(""));
        assert_eq!(args.log_level.as_deref(), Some("debug"));
    }

    #[test]
    fn run_flags_before_a_subcommand_are_rejected() {
        assert!(try_parse(&["--tls-port", "1", "spki", "--pem", "x"]).is_err());
    }

    #[test]
    fn hidden_component_flag_is_accepted() {
        let Ok(Command::Run(args)) = try_parse(&["--component", "p.cwasm"]) else {
            panic!("expected run");
        };
        assert_eq!(args.component, Some(PathBuf::from("p.cwasm")));
    }

    #[test]
    fn spki_takes_host_and_name_with_default_port() {
        let Ok(Command::Spki(args)) =
            try_parse(&["spki", "--host", "1.1.1.1", "--name", "one.one"])
        else {
            panic!("expected spki");
        };
        assert_eq!(args.host, "1.1.1.1".parse().ok());
        assert_eq!(args.port, 853);
        assert_eq!(args.name.as_deref(), Some("one.one"));
    }

    #[test]
    fn spki_takes_a_pem_file_alone() {
        let Ok(Command::Spki(args)) = try_parse(&["spki", "--pem", "chain.pem"]) else {
            panic!("expected spki");
        };
        assert_eq!(args.pem, Some(PathBuf::from("chain.pem")));
        assert_eq!(args.host, None);
    }

    #[test]
    fn spki_takes_a_config_file_alone() {
        let Ok(Command::Spki(args)) = try_parse(&["spki", "--config", "settings.ini"]) else {
            panic!("expected spki");
        };
        assert_eq!(args.config, Some(PathBuf::from("settings.ini")));
        for argv in [
            &[
                "spki", "--config", "s.ini", "--host", "1.1.1.1", "--name", "a",
            ][..],
            &["spki", "--config", "s.ini", "--pem", "x"],
            &["spki", "--config", "s.ini", "--ca-file", "ca.pem"],
            &["spki", "--config", "s.ini", "--port", "853"],
        ] {
            assert!(try_parse(argv).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn spki_rejects_incomplete_or_mixed_sources() {
        for argv in [
            &["spki"][..],
            &["spki", "--name", "one.one"],
            &["spki", "--pem", "x", "--host", "1.1.1.1", "--name", "a"],
            &["spki", "--pem", "x", "--port", "853"],
            &["spki", "--pem", "x", "--name", "a"],
            &["spki", "--host", "dns.google", "--name", "dns.google"],
            &["spki", "--host", "1.1.1.1", "--name", "a", "--port", "0"],
        ] {
            assert!(try_parse(argv).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn top_help_text() {
        insta::assert_snapshot!("top_help", help(&["top", "--help"]));
    }

    #[test]
    fn top_reads_the_configured_endpoint_every_second() {
        let Ok(Command::Top(args)) = try_parse(&["top"]) else {
            panic!("expected top");
        };
        assert_eq!((args.url, args.config), (None, None));
        assert_eq!(args.interval, Duration::from_secs(1));
        assert!(try_parse(&["top", "--url", "x:1", "--config", "s.ini"]).is_err());
        let Ok(Command::Top(args)) =
            try_parse(&["top", "--url", "127.0.0.1:5601", "--interval", "250ms"])
        else {
            panic!("expected top");
        };
        assert_eq!(args.url.as_deref(), Some("127.0.0.1:5601"));
        assert_eq!(args.interval, Duration::from_millis(250));
        assert!(try_parse(&["top", "--interval", "0"]).is_err());
    }

    #[test]
    fn health_help_text() {
        insta::assert_snapshot!("health_help", help(&["health", "--help"]));
    }

    #[test]
    fn health_defaults_to_liveness_within_2s() {
        let Ok(Command::Health(args)) = try_parse(&["health"]) else {
            panic!("expected health");
        };
        assert!(!args.ready);
        assert_eq!(args.timeout, Duration::from_secs(2));
        assert_eq!(args.name.to_string(), ".");
        assert!(args.config.is_none() && args.local_host.is_none() && args.local_port.is_none());
    }

    #[test]
    fn health_takes_the_listen_flags_like_run() {
        let Ok(Command::Health(args)) = try_parse(&[
            "health",
            "--config",
            "/etc/dnsproxy/settings.ini",
            "--local-host",
            "::",
            "--local-port",
            "5353",
            "--ready",
            "--name",
            "example.org",
            "--timeout",
            "1500ms",
        ]) else {
            panic!("expected health");
        };
        assert!(args.ready);
        assert_eq!(args.timeout, Duration::from_millis(1500));
        assert_eq!(args.name.to_string(), "example.org");
        let run = args.run_args();
        assert_eq!(
            run.config,
            Some(PathBuf::from("/etc/dnsproxy/settings.ini"))
        );
        assert_eq!(run.local_host.as_deref(), Some("::"));
        assert_eq!(run.local_port.as_deref(), Some("5353"));
        assert!(run.tls_host.is_none() && run.component.is_none());
    }

    #[test]
    fn health_rejects_bad_timeouts_names_and_other_run_flags() {
        for argv in [
            &["health", "--timeout", "0"][..],
            &["health", "--timeout", "61s"],
            &["health", "--timeout", "soon"],
            &["health", "--name", "a..b"],
            &["health", "--tls-host", "1.1.1.1"],
        ] {
            assert!(try_parse(argv).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn precompile_needs_out() {
        assert!(try_parse(&["precompile"]).is_err());
        let Ok(Command::Precompile(args)) = try_parse(&["precompile", "--out", "p.cwasm"]) else {
            panic!("expected precompile");
        };
        assert_eq!(args.out, PathBuf::from("p.cwasm"));
    }
}
