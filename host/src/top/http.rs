//! Fetches the metrics page: one plain HTTP/1.1 GET with `Connection:
//! close`, nothing more (the exporter is local and speaks plain HTTP).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::Duration;

/// Where the metrics are: `http://HOST:PORT/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsUrl {
    /// `HOST:PORT` as given (the Host header).
    pub authority: String,
    /// The path, `/metrics` when the URL has none.
    pub path: String,
}

impl MetricsUrl {
    /// Parses `http://host:port[/path]` or a bare `host:port` (the
    /// `metrics_listen` form); the path defaults to `/metrics`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = match text.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "{scheme}:// is not supported: the exporter speaks http://"
                ));
            }
            None => text,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/metrics"),
        };
        if authority.is_empty() || !authority.contains(':') {
            return Err(format!(
                "{text}: expected http://HOST:PORT/metrics or HOST:PORT (e.g. 127.0.0.1:9153)"
            ));
        }
        Ok(Self {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

impl std::fmt::Display for MetricsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

/// GETs the page within `timeout`; the error says what failed in one line.
pub fn get(url: &MetricsUrl, timeout: Duration) -> Result<String, String> {
    let addr: SocketAddr = url
        .authority
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", url.authority))?
        .next()
        .ok_or_else(|| format!("{}: no address", url.authority))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let io = |e: std::io::Error| format!("{addr}: {e}");
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(
        stream,
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n",
        url.path, url.authority
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    // A response larger than this is not a metrics page of ours.
    stream.take(16 << 20).read_to_end(&mut raw).map_err(io)?;
    body(&raw)
}

/// The body of a raw HTTP response, if its status is 200.
fn body(raw: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("incomplete HTTP response")?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("HTTP status: {status}"));
    }
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    if chunked {
        dechunk(body)
    } else {
        Ok(body.to_owned())
    }
}

/// Decodes a chunked body (RFC 9112 §7.1).
fn dechunk(mut body: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").ok_or("bad chunk")?;
        let size = size.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| "bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("short chunk")?;
        out.push_str(chunk);
        body = rest
            .get(size..)
            .and_then(|r| r.strip_prefix("\r\n"))
            .ok_or("bad chunk end")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_the_metrics_listen_form_too() {
        let url = MetricsUrl::parse("127.0.0.1:9153").expect("valid");
        assert_eq!(url.to_string(), "http://127.0.0.1:9153/metrics");
        let url = MetricsUrl::parse("http://[::1]:9153/m").expect("valid");
        assert_eq!(
            (url.authority.as_str(), url.path.as_str()),
            ("[::1]:9153", "/m")
        );
        for bad in ["https://127.0.0.1:9153/metrics", "localhost", ""] {
            assert!(MetricsUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bodies_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\na 1\n";
        assert_eq!(body(plain).as_deref(), Ok("a 1\n"));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\na 1\n\r\n4\r\nb 2\n\r\n0\r\n\r\n";
        assert_eq!(body(chunked).as_deref(), Ok("a 1\nb 2\n"));
        assert!(body(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
        assert!(body(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
