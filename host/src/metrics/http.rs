//! A deliberately small HTTP/1.1 server for `metrics_listen`: `GET
//! /metrics`, `/health` and `/ready`, nothing else. Bounded on every side, as
//! it may face a network: at most [`MAX_CONNECTIONS`] at once (more wait in
//! the kernel's backlog), a request head of at most [`MAX_HEAD`] bytes read
//! within [`DEADLINE`], the answer written within it too, one request per
//! connection (`Connection: close`). The request body, if any, is never read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::Metrics;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// The largest request head read (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Time a connection gets to send its request and take the answer.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// What a request gets: status line, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    /// `200 OK`, `404 Not Found`...
    pub status: &'static str,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
    /// `Allow: GET` goes with 405.
    pub allow: bool,
}

const TEXT: &str = "text/plain; charset=utf-8";
/// The Prometheus text exposition format.
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

fn text(status: &'static str, body: &str) -> Answer {
    Answer {
        status,
        content_type: TEXT,
        body: format!("{body}\n"),
        allow: false,
    }
}

/// Answers a request head (everything up to the blank line). Pure, so it is
/// tested without sockets.
pub fn answer(head: &[u8], metrics: &Metrics, now: Instant) -> Answer {
    let line = head.split(|&b| b == b'\r' || b == b'\n').next();
    let mut parts = line
        .and_then(|l| std::str::from_utf8(l).ok())
        .unwrap_or_default()
        .split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return text("400 Bad Request", "bad request line");
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return text("400 Bad Request", "bad request line");
    }
    if method != "GET" && method != "HEAD" {
        return Answer {
            allow: true,
            ..text("405 Method Not Allowed", "only GET")
        };
    }
    // A query string does not change the answer (Prometheus sends none).
    let path = target.split('?').next().unwrap_or_default();
    match path {
        "/metrics" => Answer {
            status: "200 OK",
            content_type: EXPOSITION,
            body: metrics.render(),
            allow: false,
        },
        "/health" if metrics.healthy(now) => text("200 OK", "serving"),
        "/health" => text("503 Service Unavailable", "not serving"),
        "/ready" if metrics.ready(now) => text("200 OK", "ready"),
        "/ready" if metrics.healthy(now) => {
            text("503 Service Unavailable", "every upstream is in backoff")
        }
        "/ready" => text("503 Service Unavailable", "not serving"),
        _ => text(
            "404 Not Found",
            "not found: try /metrics, /health or /ready",
        ),
    }
}

/// Binds `addr`; the error says what failed and where.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on metrics_listen {addr}: {e}"))
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // Wait for a free slot before accepting: excess clients queue in
        // the kernel's backlog instead of costing memory here.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(DEADLINE, serve_one(stream, &metrics)).await;
            drop(slot);
        });
    }
}

async fn serve_one(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break false;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break true;
        }
        if head.len() > MAX_HEAD {
            break false;
        }
    };
    let reply = if complete {
        answer(&head, metrics, Instant::now())
    } else if head.len() > MAX_HEAD {
        text(
            "431 Request Header Fields Too Large",
            "request head too large",
        )
    } else {
        return Ok(());
    };
    let head_only = head.starts_with(b"HEAD ");
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        reply.status,
        reply.content_type,
        reply.body.len(),
        if reply.allow {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        },
    );
    if !head_only {
        out.push_str(&reply.body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnsproxy_core::core::stats::{Report, Stats, UpstreamGauges};

    fn metrics(ready: Option<bool>) -> Metrics {
        let m = Metrics::new(vec!["dot".into()]);
        if let Some(ready) = ready {
            m.apply(
                0,
                Report {
                    stats: Stats::new(1),
                    inflight: 0,
                    upstreams: vec![UpstreamGauges::default()],
                    ready,
                    cache: Default::default(),
                },
                Instant::now(),
            );
        }
        m
    }

    fn status(head: &str, m: &Metrics) -> &'static str {
        answer(head.as_bytes(), m, Instant::now()).status
    }

    #[test]
    fn routes() {
        let m = metrics(Some(true));
        assert_eq!(
            status("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &m),
            "200 OK"
        );
        assert_eq!(status("GET /health HTTP/1.0\r\n\r\n", &m), "200 OK");
        assert_eq!(status("GET /ready?x=1 HTTP/1.1\r\n\r\n", &m), "200 OK");
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n", &m), "404 Not Found");
        assert_eq!(
            status("POST /metrics HTTP/1.1\r\n\r\n", &m),
            "405 Method Not Allowed"
        );
        assert_eq!(status("GET /metrics\r\n\r\n", &m), "400 Bad Request");
        assert_eq!(status("\u{1}\r\n\r\n", &m), "400 Bad Request");
        let body = answer(b"GET /metrics HTTP/1.1\r\n\r\n", &m, Instant::now());
        assert_eq!(body.content_type, EXPOSITION);
        assert!(body.body.contains("dnsproxy_build_info"));
    }

    #[test]
    fn health_and_readiness_follow_the_reports() {
        let none = metrics(None);
        assert_eq!(
            status("GET /health HTTP/1.1\r\n\r\n", &none),
            "503 Service Unavailable"
        );
        let backoff = metrics(Some(false));
        assert_eq!(status("GET /health HTTP/1.1\r\n\r\n", &backoff), "200 OK");
        let ready = answer(b"GET /ready HTTP/1.1\r\n\r\n", &backoff, Instant::now());
        assert_eq!(ready.status, "503 Service Unavailable");
        assert_eq!(ready.body, "every upstream is in backoff\n");
    }
}
