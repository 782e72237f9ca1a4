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

/// Runs the live view until `q`, Esc or Ctrl-C.
pub fn run(args: &TopArgs) -> ExitCode {
    let url = match MetricsUrl::parse(&args.url) {
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
