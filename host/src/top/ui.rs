//! Draws one screen of `dnsproxy top` from a [`Snapshot`] and its history.

use std::fmt::Write as _;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style, Stylize as _};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Sparkline, Table};

use super::stats::{History, Snapshot, UpstreamRow};

/// What the screen shows besides the numbers.
pub struct Screen<'a> {
    /// Where the metrics come from.
    pub url: &'a str,
    /// Refresh interval, for the title.
    pub interval: std::time::Duration,
    /// The last good snapshot, if any.
    pub snapshot: Option<&'a Snapshot>,
    /// The last fetch error, if the last fetch failed.
    pub error: Option<&'a str>,
    /// Answers per second, oldest first.
    pub qps: &'a History,
    /// p99 answer latency in seconds, oldest first.
    pub p99: &'a History,
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, screen: &Screen<'_>) {
    let [summary, qps, p99, upstreams, status] = Layout::vertical([
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let version = screen
        .snapshot
        .and_then(|s| s.version.as_deref())
        .unwrap_or("?");
    let title = format!(
        " dnsproxy {version} · {} · every {:?} ",
        screen.url, screen.interval
    );
    let empty = Snapshot::default();
    let snap = screen.snapshot.unwrap_or(&empty);
    frame.render_widget(
        Paragraph::new(summary_lines(snap)).block(Block::bordered().title(title.bold())),
        summary,
    );
    let qps_now = snap.qps.map_or("…".to_owned(), |q| format!("{q:.1}"));
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(format!(" qps {qps_now} ")))
            .data(screen.qps.bars(1.0))
            .style(Style::default().fg(Color::Green)),
        qps,
    );
    let p99_now = snap.p99.map_or("…".to_owned(), ms);
    frame.render_widget(
        Sparkline::default()
            // Bars in tenths of a millisecond.
            .block(Block::bordered().title(format!(" p99 latency {p99_now} ")))
            .data(screen.p99.bars(1e4))
            .style(Style::default().fg(Color::Yellow)),
        p99,
    );
    frame.render_widget(upstream_table(&snap.upstreams), upstreams);
    let status_line = match screen.error {
        Some(e) => Line::from(vec![
            Span::styled(
                format!("cannot read {}: {e}", screen.url),
                Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
            Span::raw(" (retrying) · q quits"),
        ]),
        None => Line::from("q quits"),
    };
    frame.render_widget(Paragraph::new(status_line), status);
}

/// Milliseconds with a precision that suits the value.
fn ms(seconds: f64) -> String {
    let ms = seconds * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn opt(value: Option<f64>) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.0}"))
}

fn summary_lines(s: &Snapshot) -> Vec<Line<'static>> {
    let qps = s.qps.map_or("…".to_owned(), |q| format!("{q:.1}"));
    let mut rcodes = String::new();
    for (rcode, share) in &s.rcodes {
        let _ = write!(rcodes, "{rcode} {:.1}%  ", share * 100.0);
    }
    if rcodes.is_empty() {
        rcodes.push_str("(no answers in the interval)");
    }
    let latency = match (s.p50, s.p99) {
        (Some(p50), Some(p99)) => format!("p50 {}  p99 {}", ms(p50), ms(p99)),
        _ => "(no answers in the interval)".to_owned(),
    };
    vec![
        Line::from(vec![
            "qps ".into(),
            qps.bold(),
            format!(
                "   in flight {}   tcp clients {}   restarts {}",
                opt(s.inflight),
                opt(s.tcp_clients),
                opt(s.restarts)
            )
            .into(),
        ]),
        Line::from(format!("rcodes   {rcodes}")),
        Line::from(format!("latency  {latency}")),
    ]
}

fn upstream_table(rows: &[UpstreamRow]) -> Table<'static> {
    let header = Row::new([
        "upstream",
        "state",
        "rtt p50",
        "qps",
        "conns",
        "failures",
        "certificate",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let rows: Vec<Row<'static>> = rows.iter().map(upstream_row).collect();
    Table::new(
        rows,
        [
            Constraint::Min(14),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(22),
            // Room for "expires in 365 days (leaf_only, no_backup)".
            Constraint::Min(42),
        ],
    )
    .header(header)
    .block(Block::bordered().title(" upstreams "))
}

fn upstream_row(u: &UpstreamRow) -> Row<'static> {
    let state = match u.up {
        Some(true) => Cell::from("up").style(Style::default().fg(Color::Green)),
        Some(false) => Cell::from("down").style(Style::default().fg(Color::Red)),
        None => Cell::from("?"),
    };
    let failures = if u.failures.is_empty() {
        "none".to_owned()
    } else {
        u.failures
            .iter()
            .map(|(check, n)| format!("{check} {n:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut cert = match u.cert_days {
        Some(d) if d < 0.0 => format!("expired {:.0} days ago", -d),
        Some(d) => format!("expires in {d:.0} days"),
        None => "-".to_owned(),
    };
    if !u.pin_warnings.is_empty() {
        let _ = write!(cert, " ({})", u.pin_warnings.join(", "));
    }
    let cert_style = match u.cert_days {
        Some(d) if d < 14.0 => Style::default().fg(Color::Red),
        _ if !u.pin_warnings.is_empty() => Style::default().fg(Color::Yellow),
        _ => Style::default(),
    };
    Row::new(vec![
        Cell::from(u.name.clone()),
        state,
        Cell::from(u.rtt_p50.map_or("-".to_owned(), ms)),
        Cell::from(u.qps.map_or("…".to_owned(), |q| format!("{q:.1}"))),
        Cell::from(opt(u.connections)),
        Cell::from(failures),
        Cell::from(cert).style(cert_style),
    ])
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;

    /// The screen as text, one line per row.
    fn render(screen: &Screen<'_>) -> String {
        let mut terminal = Terminal::new(TestBackend::new(120, 30)).expect("test backend");
        terminal.draw(|f| draw(f, screen)).expect("draw");
        let buffer = terminal.backend().buffer();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_screen_shows_rates_latency_and_each_upstream() {
        let snapshot = Snapshot {
            version: Some("0.1.0".into()),
            qps: Some(12.5),
            rcodes: vec![("NOERROR".into(), 0.75), ("NXDOMAIN".into(), 0.25)],
            p50: Some(0.0012),
            p99: Some(0.0456),
            inflight: Some(1.0),
            tcp_clients: Some(2.0),
            restarts: Some(0.0),
            upstreams: vec![UpstreamRow {
                name: "quad9".into(),
                up: Some(true),
                qps: Some(12.5),
                rtt_p50: Some(0.003),
                failures: [("timeout".to_owned(), 2.0)].into(),
                cert_days: Some(41.6),
                connections: Some(1.0),
                pin_warnings: vec!["no_backup".into()],
            }],
        };
        let (mut qps, mut p99) = (History::default(), History::default());
        qps.push(Some(12.5));
        p99.push(Some(0.0456));
        let screen = render(&Screen {
            url: "http://127.0.0.1:9153/metrics",
            interval: std::time::Duration::from_secs(1),
            snapshot: Some(&snapshot),
            error: None,
            qps: &qps,
            p99: &p99,
        });
        for want in [
            "dnsproxy 0.1.0",
            "qps 12.5",
            "NOERROR 75.0%",
            "NXDOMAIN 25.0%",
            "p50 1.20 ms  p99 46 ms",
            "quad9",
            "up",
            "3.00 ms",
            "timeout 2",
            "expires in 42 days (no_backup)",
        ] {
            assert!(
                screen.contains(want),
                "{want:?} not on the screen:\n{screen}"
            );
        }
    }

    #[test]
    fn an_unreachable_endpoint_says_so() {
        let (qps, p99) = (History::default(), History::default());
        let screen = render(&Screen {
            url: "http://127.0.0.1:1/metrics",
            interval: std::time::Duration::from_secs(1),
            snapshot: None,
            error: Some("connect to 127.0.0.1:1: Connection refused"),
            qps: &qps,
            p99: &p99,
        });
        assert!(
            screen.contains("cannot read http://127.0.0.1:1/metrics: connect to 127.0.0.1:1"),
            "{screen}"
        );
    }
}
