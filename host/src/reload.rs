//! SIGHUP: the configuration read again, and served without dropping a
//! query.
//!
//! The file is read again with the same layers as at start: the process's
//! environment cannot have changed and the flags are those it was started
//! with, so both still win over the file. A configuration that does not
//! load is refused in one line and the running one keeps serving. One that
//! loads is published as the next generation ([`Published::publish`]); the
//! component takes it within about a second and the socket policy follows at
//! that moment. SIGHUP never stops the process.
//!
//! Some settings cannot change without a restart: the listen addresses
//! (`local_host`, `local_port`: the sockets stay bound so no query is lost),
//! `metrics_listen`, `log_format`, `workers` and `cache_size_mib`. A reload
//! that changes them keeps their running values, applies the rest, and says
//! which were kept.

use crate::cli::RunArgs;
use crate::config::{self, Key, ProxyConfig};
use crate::logfmt;
use crate::metrics::Metrics;
use crate::sandbox::Published;

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The new configuration is published as this generation.
    Published(u64),
    /// It is the one serving: nothing to do.
    Unchanged,
    /// It does not load; the running one keeps serving.
    Refused,
}

/// Reads the configuration again (`args` and `env` as at start) and
/// publishes it; logs and counts the result.
pub fn reload(
    args: &RunArgs,
    env: &dyn Fn(&str) -> Option<String>,
    published: &Published,
    metrics: &Metrics,
) -> Reloaded {
    let mut next = match config::load(args, env) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                "SIGHUP: configuration not reloaded, the running one keeps serving: {e}"
            );
            metrics.reloaded(false);
            return Reloaded::Refused;
        }
    };
    let (_, running) = published.current();
    let kept = keep_fixed(&running, &mut next);
    if !kept.is_empty() {
        let keys: Vec<&str> = kept.iter().map(|k| k.name()).collect();
        tracing::warn!(
            keys = keys.join(", "),
            "SIGHUP: these settings take effect at the next restart; their running values are kept"
        );
    }
    metrics.reloaded(true);
    if next == *running {
        tracing::info!("SIGHUP: configuration unchanged");
        return Reloaded::Unchanged;
    }
    warn_pin_sets(&next);
    if (next.log_level, next.log_queries) != (running.log_level, running.log_queries) {
        logfmt::set_filter(logfmt::filter(next.log_level, next.log_queries));
    }
    let upstreams = config::describe_upstreams(&next);
    let generation = published.publish(next);
    tracing::info!(generation, upstreams, "SIGHUP: configuration reloaded");
    Reloaded::Published(generation)
}

/// Logs a WARN line for each pin set that cannot survive a key rotation
/// ([`config::pin_warnings`]): at start-up and on each reload, under the
/// binary's own target as the start-up line.
pub fn warn_pin_sets(config: &ProxyConfig) {
    for warning in config::pin_warnings(config) {
        tracing::warn!(
            target: "dnsproxy",
            upstream = %warning.upstream,
            warning = warning.kind.as_str(),
            "{warning}"
        );
    }
}

/// Gives `next` the running values of the settings that need a restart;
/// returns the keys whose values it had changed.
fn keep_fixed(running: &ProxyConfig, next: &mut ProxyConfig) -> Vec<Key> {
    let mut kept = Vec::new();
    if next.listen != running.listen {
        let ips = |c: &ProxyConfig| c.listen.iter().map(|a| a.ip()).collect::<Vec<_>>();
        let port = |c: &ProxyConfig| c.listen.first().map(|a| a.port());
        if ips(next) != ips(running) {
            kept.push(Key::LocalHost);
        }
        if port(next) != port(running) {
            kept.push(Key::LocalPort);
        }
        next.listen.clone_from(&running.listen);
    }
    if next.metrics_listen != running.metrics_listen {
        kept.push(Key::MetricsListen);
        next.metrics_listen = running.metrics_listen;
    }
    // The instance's memory limit was sized for it at start.
    if next.cache.max_bytes != running.cache.max_bytes {
        kept.push(Key::CacheSizeMib);
        next.cache.max_bytes = running.cache.max_bytes;
    }
    // The workers run from start to stop, each with its share of the limits.
    if next.workers != running.workers {
        kept.push(Key::Workers);
        next.workers = running.workers;
    }
    if next.log_format != running.log_format {
        kept.push(Key::LogFormat);
        next.log_format = running.log_format;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(path: &std::path::Path) -> RunArgs {
        RunArgs {
            config: Some(path.to_path_buf()),
            ..RunArgs::default()
        }
    }

    fn write(path: &std::path::Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    /// A fresh settings.ini path of its own.
    fn settings(test: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("dnsproxy-reload-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("settings.ini")
    }

    const BASE: &str = "[LOCAL_SERVER]\nlocal_host = 127.0.0.1\nlocal_port = 5353\n\
                        [TLS_SERVER]\ntls_host = 127.0.0.1\ntls_port = 853\n";

    /// A good file is published as the next generation; a broken one is
    /// refused and the running one stays; the same one is unchanged; a
    /// changed listen address is kept as it runs. Each is counted.
    #[test]
    fn reload_publishes_refuses_or_keeps() {
        let path = settings("publish");
        write(&path, BASE);
        let env = |_: &str| None;
        let config = config::load(&args(&path), &env).unwrap();
        let published = Published::new(config.clone());
        let metrics = Metrics::new(vec![]);

        write(&path, &format!("{BASE}tls_hostname = dot.test\n"));
        assert_eq!(
            reload(&args(&path), &env, &published, &metrics),
            Reloaded::Published(2)
        );
        let (_, now) = published.current();
        assert!(matches!(&now.upstreams[0].auth_name, config::AuthName::Dns(n) if n == "dot.test"));

        write(&path, &format!("{BASE}tls_port = not-a-port\n"));
        assert_eq!(
            reload(&args(&path), &env, &published, &metrics),
            Reloaded::Refused
        );
        assert_eq!(published.current().0, 2);

        write(
            &path,
            &format!("{}tls_hostname = dot.test\n", BASE.replace("5353", "6000")),
        );
        assert_eq!(
            reload(&args(&path), &env, &published, &metrics),
            Reloaded::Unchanged,
            "only the listen port changed, and it is kept"
        );
        assert_eq!(published.current().1.listen, config.listen);
        let text = metrics.render();
        assert!(
            text.contains(r#"dnsproxy_config_reloads_total{result="ok"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"dnsproxy_config_reloads_total{result="error"} 1"#));
    }

    /// Environment variables still win over the reloaded file.
    #[test]
    fn environment_still_wins_after_a_reload() {
        let path = settings("env");
        write(&path, BASE);
        let env = |k: &str| (k == "QUERY_TIMEOUT").then(|| "3s".to_owned());
        let config = config::load(&args(&path), &env).unwrap();
        let published = Published::new(config.clone());
        let metrics = Metrics::new(vec![]);
        write(
            &path,
            &format!("{BASE}[PROXY]\nquery_timeout = 9s\nmax_inflight = 100\n"),
        );
        assert_eq!(
            reload(&args(&path), &env, &published, &metrics),
            Reloaded::Published(2)
        );
        let (_, now) = published.current();
        assert_eq!(now.query_timeout, std::time::Duration::from_secs(3));
        assert_eq!(now.max_inflight, 100);
    }
}
