//! `dnsproxy top` as a person uses it: started in a terminal (tmux, 120x40)
//! against a running proxy that serves metrics and answers queries; the
//! screen is read back with `tmux capture-pane` and checked for what a
//! person looks at: the query rate, the upstream and its state, and the days
//! until its certificate expires. Then `q` quits it.
//!
//! Needs `tmux` and the proxy's metrics endpoint (`METRICS_LISTEN`).

use std::net::UdpSocket;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use spec_tests::dns::{self, QueryBuilder};
use spec_tests::proxy::Proxy;
use spec_tests::{Chain, FixtureResolver, Misbehave, Resolver as _, free_port, zone};

/// A tmux server of our own (its own socket), killed on drop, so a
/// person's tmux sessions are never touched.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` in a detached 120x40 session.
    fn start(command: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let socket = format!(
            "dnsproxy-top-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let me = Self { socket };
        let out = me.run(&["new-session", "-d", "-x", "120", "-y", "40", command]);
        assert!(out.status.success(), "tmux new-session: {out:?}");
        me
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux (apt-get install tmux)")
    }

    /// The visible screen, one line per row.
    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p"]).stdout).into_owned()
    }

    /// Whether the session (and so the program in it) is still there.
    fn alive(&self) -> bool {
        self.run(&["has-session"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The number after the first `qps ` on the screen.
fn qps(screen: &str) -> Option<f64> {
    let at = screen.find("qps ")? + 4;
    let number: String = screen[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number.parse().ok()
}

/// The number of days in `expires in N days`.
fn expiry_days(screen: &str) -> Option<u64> {
    let at = screen.find("expires in ")? + "expires in ".len();
    let rest = &screen[at..];
    let (days, tail) = rest.split_once(' ')?;
    tail.starts_with("days").then(|| days.parse().ok())?
}

#[test]
fn top_shows_qps_the_upstream_its_state_and_certificate_expiry() {
    let resolver = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let metrics = format!("127.0.0.1:{}", free_port());
    let proxy = Proxy::in_front_of(&[&resolver], &[("METRICS_LISTEN", &metrics)]);
    // Queries throughout, so every interval has answers (bounded: 30 s).
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, addr) = (stop.clone(), proxy.addr());
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
                let q = QueryBuilder::new(zone::A_NAME, RecordType::A).build();
                let _ = sock.send_to(&dns::encode(&q), addr);
                let _ = dns::recv_answer(&sock, q.id(), Duration::from_secs(1));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let command = format!(
        "{} top --url http://{metrics}/metrics --interval 500ms",
        Proxy::binary().display()
    );
    let tmux = Tmux::start(&command);
    let upstream = resolver.addr().to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut screen = tmux.screen();
    let ready = |s: &str| {
        qps(s).is_some_and(|q| q > 0.0)
            && s.lines()
                .any(|l| l.contains(&upstream) && l.contains(" up "))
            && expiry_days(s).is_some()
    };
    while !ready(&screen) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        screen = tmux.screen();
    }
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    assert!(
        ready(&screen),
        "the screen shows qps > 0, upstream {upstream} up and its certificate expiry:\n{screen}\n\
         proxy log:\n{}",
        proxy.log()
    );
    // The fixture leaf is valid until 2125.
    let days = expiry_days(&screen).unwrap_or_default();
    assert!((30_000..40_000).contains(&days), "{days} days:\n{screen}");
    assert!(screen.contains("NOERROR"), "the rcode mix:\n{screen}");
    let _ = tmux.run(&["send-keys", "q"]);
    let quit_by = Instant::now() + Duration::from_secs(5);
    while tmux.alive() && Instant::now() < quit_by {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!tmux.alive(), "q quits:\n{}", tmux.screen());
}

#[test]
fn top_says_when_the_endpoint_cannot_be_reached() {
    // Nothing listens there: a port no one was given.
    let url = format!("http://127.0.0.1:{}/metrics", free_port());
    let tmux = Tmux::start(&format!(
        "{} top --url {url} --interval 200ms",
        Proxy::binary().display()
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut screen = tmux.screen();
    while !screen.contains("cannot read") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        screen = tmux.screen();
    }
    assert!(
        screen.contains(&format!("cannot read {url}: connect to")),
        "{screen}"
    );
}
