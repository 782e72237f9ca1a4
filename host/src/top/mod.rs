//! `dnsproxy top`: a live view of a running proxy, read from its metrics
//! endpoint: answers per second, the RCODE mix, answer latency p50/p99 with
//! a short history, and each upstream's state, RTT, failures and days until
//! its certificates expire. Refreshes every `--interval`; `q` quits.
//!
//! The pure parts are [`prom`] (the exposition format), [`stats`] (deltas,
//! quantiles) and [`ui`] (drawing); this file fetches on a thread of its own
//! so a slow endpoint never freezes the keys.

pub mod http;
pub mod prom;
pub mod stats;
pub mod ui;

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use crate::cli::TopArgs;
use http::MetricsUrl;
use prom::Scrape;
use stats::{History, Snapshot};

/// Where `top` looks without `--url`, when the configuration serves no
/// metrics.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9153/metrics";

/// The endpoint to read: `--url`, else the configuration's `metrics_listen`
/// (a wildcard address read on loopback), else [`DEFAULT_URL`]. A file given
/// with `--config` must load; the implicit one may not (then the default).
fn endpoint(args: &TopArgs) -> Result<String, String> {
    if let Some(url) = &args.url {
        return Ok(url.clone());
    }
    let run = crate::cli::RunArgs {
        config: args.config.clone(),
        ..crate::cli::RunArgs::default()
    };
    let config = match crate::config::load(&run, &|name| std::env::var(name).ok()) {
        Ok(config) => config,
        // A file named with --config must load; without it, whatever
        // ./settings.ini and the environment hold (perhaps no upstream at
        // all, where only `top` runs) does not stop the view.
        Err(e) if args.config.is_some() => return Err(e.to_string()),
        Err(_) => return Ok(DEFAULT_URL.to_owned()),
    };
    Ok(config.metrics_listen.map_or_else(
        || DEFAULT_URL.to_owned(),
        |addr| format!("http://{}/metrics", crate::health::target(addr)),
    ))
}

/// Runs the live view until `q`, Esc or Ctrl-C.
pub fn run(args: &TopArgs) -> ExitCode {
    let url = match endpoint(args).and_then(|url| MetricsUrl::parse(&url)) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("dnsproxy top: {e}");
            return ExitCode::from(crate::config::EXIT_CONFIG as u8);
        }
    };
    let interval = args.interval;
    let (tx, rx) = mpsc::channel();
    let fetch_url = url.clone();
    // Ends when the receiver is gone (the view quit).
    std::thread::spawn(move || {
        loop {
            let result =
                http::get(&fetch_url, interval.max(Duration::from_secs(1))).and_then(|text| {
                    Scrape::parse(&text).map_err(|e| format!("not a metrics page: {e}"))
                });
            if tx.send((Instant::now(), result)).is_err() {
                return;
            }
            std::thread::sleep(interval);
        }
    });
    let mut terminal = ratatui::init();
    let result = view(&mut terminal, &url.to_string(), interval, &rx);
    ratatui::restore();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dnsproxy top: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The event loop: redraws on every fetch and on resize, quits on `q`.
fn view(
    terminal: &mut ratatui::DefaultTerminal,
    url: &str,
    interval: Duration,
    rx: &mpsc::Receiver<(Instant, Result<Scrape, String>)>,
) -> std::io::Result<()> {
    let mut last: Option<(Instant, Scrape)> = None;
    let mut snapshot: Option<Snapshot> = None;
    let mut error: Option<String> = None;
    let (mut qps, mut p99) = (History::default(), History::default());
    let mut dirty = true;
    loop {
        while let Ok((at, result)) = rx.try_recv() {
            match result {
                Ok(scrape) => {
                    let before = last.as_ref().map(|(t, s)| (at.duration_since(*t), s));
                    let secs = before.map_or(0.0, |(d, _)| d.as_secs_f64());
                    let unix_now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64());
                    let snap = stats::snapshot(before.map(|(_, s)| s), &scrape, secs, unix_now);
                    if last.is_some() {
                        qps.push(snap.qps);
                        p99.push(snap.p99);
                    }
                    snapshot = Some(snap);
                    last = Some((at, scrape));
                    error = None;
                }
                Err(e) => error = Some(e),
            }
            dirty = true;
        }
        if dirty {
            terminal.draw(|frame| {
                ui::draw(
                    frame,
                    &ui::Screen {
                        url,
                        interval,
                        snapshot: snapshot.as_ref(),
                        error: error.as_deref(),
                        qps: &qps,
                        p99: &p99,
                    },
                );
            })?;
            dirty = false;
        }
        if event::poll(Duration::from_millis(100))? {
            match event::read()? {
                Event::Key(key) if key.kind == KeyEventKind::Press => {
                    let ctrl_c = key.code == KeyCode::Char('c')
                        && key.modifiers.contains(KeyModifiers::CONTROL);
                    if ctrl_c || matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) {
                        return Ok(());
                    }
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: Option<&str>, ini: Option<&str>) -> TopArgs {
        let config = ini.map(|text| {
            let dir = std::env::temp_dir().join(format!(
                "dnsproxy-top-{}-{}",
                std::process::id(),
                text.len()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("settings.ini");
            std::fs::write(&path, text).unwrap();
            path
        });
        TopArgs {
            url: url.map(str::to_owned),
            config,
            interval: Duration::from_secs(1),
        }
    }

    /// `--url` wins; else the file's metrics_listen (a wildcard read on
    /// loopback); else the default.
    #[test]
    fn endpoint_is_the_flag_then_metrics_listen_then_the_default() {
        const UPSTREAM: &str = "[TLS_SERVER]\ntls_host = 127.0.0.1\n";
        assert_eq!(endpoint(&args(Some("h:1"), None)).unwrap(), "h:1");
        let listen = format!("{UPSTREAM}[PROXY]\nmetrics_listen = 0.0.0.0:9391\n");
        assert_eq!(
            endpoint(&args(None, Some(&listen))).unwrap(),
            "http://127.0.0.1:9391/metrics"
        );
        assert_eq!(endpoint(&args(None, Some(UPSTREAM))).unwrap(), DEFAULT_URL);
        let bad = format!("{UPSTREAM}[PROXY]\nmetrics_listen = nope\n");
        let bad = endpoint(&args(None, Some(&bad))).unwrap_err();
        assert!(bad.contains("metrics_listen"), "{bad}");
    }
}
