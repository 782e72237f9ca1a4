//! Sends client queries upstream: picks the upstream (priority order with
//! backoff), keeps one persistent pipelined connection per upstream, pads the
//! query (RFC 8467), enforces the deadlines and restores the client's ID.
//!
//! Every query ends in an answer or SERVFAIL within `query_timeout`. One
//! upstream gets at most `upstream_timeout` before the next is tried, so a
//! hung upstream (TCP open, no answers) costs one attempt, not the query. A
//! query whose connection breaks under it is resent once on a new
//! connection; after that the next upstream is tried.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;

use crate::core::message::{self, Padding, Query, Rcode};
use crate::core::pins::DisplayPins;
use crate::core::upstreams::{BACKOFF_BASE, Selector};
use crate::shell::config::{ProxyConfig, UpstreamConfig};
use crate::shell::conn::{Conn, ConnError, ConnTimeouts};
use crate::shell::log::{Level, Log};
use crate::shell::tls::{self, AuthError, PinnedVerifier, TrustError};

/// How many times a query whose connection closed under it is sent again
/// on a fresh connection to the same upstream before that upstream counts
/// as failed for it.
const MAX_RESENDS: u32 = 4;
/// Why one upstream attempt failed. The variant names the check, so the log
/// says what to fix (stubby #46: "no valid transports" helps nobody).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed.
    #[error("network: connect failed: {0}")]
    Connect(std::io::Error),
    /// Authentication failed (CA, name or pin).
    #[error("{0}")]
    Auth(AuthError),
    /// The TLS handshake failed for another reason.
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    /// No answer within the upstream timeout.
    #[error("network: no answer within {0:?}")]
    Timeout(Duration),
    /// The connection was lost with the query in flight.
    #[error("network: {0}")]
    Conn(#[from] ConnError),
    /// The answer does not match the question.
    #[error("answer does not match the question")]
    Mismatch,
    /// Recently failed; waiting for its backoff before connecting again.
    #[error("in backoff after a recent failure")]
    Backoff,
}

impl UpstreamError {
    /// The failed check, for logs: network, CA, name, pin, TLS or protocol.
    pub fn check(&self) -> &'static str {
        match self {
            UpstreamError::Auth(a) => a.check(),
            UpstreamError::Handshake(_) => "TLS",
            UpstreamError::Mismatch => "protocol",
            _ => "network",
        }
    }
}

struct Slot {
    config: UpstreamConfig,
    /// TLS configurations in the order to try them (see
    /// [`tls::client_configs`]); `tls_choice` is the first that has not failed.
    tls: Vec<Arc<ClientConfig>>,
    tls_choice: std::cell::Cell<usize>,
    name: ServerName<'static>,
    conn: RefCell<Option<Conn>>,
    /// Serialises connects so a burst of queries opens one connection.
    connecting: tokio::sync::Mutex<()>,
    last_connect: RefCell<Option<Instant>>,
}

/// Sends queries to the upstreams.
pub struct Resolver {
    slots: Vec<Slot>,
    selector: RefCell<Selector>,
    query_timeout: Duration,
    upstream_timeout: Duration,
    conn_timeouts: ConnTimeouts,
    conn_capacity: usize,
    log: Log,
}

/// An upstream's configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("upstream {upstream}: {error}")]
pub struct SetupError {
    /// Which upstream.
    pub upstream: String,
    /// What is wrong.
    pub error: SetupErrorKind,
}

/// What is wrong with an upstream's configuration.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SetupErrorKind {
    /// The CA bundle.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The auth name is not a valid DNS name.
    #[error("invalid auth name: {0}")]
    Name(String),
}

impl Resolver {
    /// Prepares the TLS configuration of every upstream; connects lazily.
    pub fn new(config: &ProxyConfig, log: Log) -> Result<Self, SetupError> {
        let mut slots = Vec::with_capacity(config.upstreams.len());
        for up in &config.upstreams {
            let fail = |error: SetupErrorKind| SetupError {
                upstream: up.name.clone(),
                error,
            };
            let anchors = match &up.ca_pem {
                Some(pem) => Some(tls::anchors_from_pem(pem).map_err(|e| fail(e.into()))?),
                None => None,
            };
            let verifier = PinnedVerifier::new(anchors, up.pins.clone());
            let tls = tls::client_configs(verifier).map_err(|e| fail(e.into()))?;
            let name = ServerName::try_from(up.auth_name.clone())
                .map_err(|e| fail(SetupErrorKind::Name(e.to_string())))?;
            slots.push(Slot {
                config: up.clone(),
                tls,
                tls_choice: std::cell::Cell::new(0),
                name,
                conn: RefCell::new(None),
                connecting: tokio::sync::Mutex::new(()),
                last_connect: RefCell::new(None),
            });
        }
        Ok(Self {
            selector: RefCell::new(Selector::new(slots.len())),
            slots,
            query_timeout: config.query_timeout,
            upstream_timeout: config.upstream_timeout,
            conn_timeouts: ConnTimeouts {
                idle: config.upstream_idle_timeout,
                stall: config.upstream_timeout,
            },
            conn_capacity: config.max_inflight.clamp(1, 65_536),
            log,
        })
    }

    /// Answers one client query: the upstream's answer with the client's ID,
    /// or a SERVFAIL when no upstream answered within the deadline.
    pub async fn resolve(&self, query: &[u8], q: &Query) -> Vec<u8> {
        let deadline = Instant::now() + self.query_timeout;
        let mut wire = query.to_vec();
        let padding =
            message::pad_query(&mut wire, message::QUERY_PADDING_BLOCK).unwrap_or(Padding::Skipped);
        let order = self.selector.borrow().order(std::time::Instant::now());
        'upstreams: for i in order {
            let mut resends = 0;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break 'upstreams;
                }
                let budget = left.min(self.upstream_timeout);
                let result = match timeout(budget, self.exchange(i, &wire)).await {
                    Ok(r) => r,
                    Err(_) => Err(UpstreamError::Timeout(budget)),
                };
                match result {
                    Ok(mut answer) if message::answers_question(query, q, &answer) => {
                        self.selector.borrow_mut().succeeded(i);
                        message::set_id(&mut answer, q.id);
                        if matches!(padding, Padding::AddedOpt)
                            && message::strip_opt(&mut answer).is_err()
                        {
                            break;
                        }
                        return answer;
                    }
                    Ok(_) => self.failed(i, &UpstreamError::Mismatch),
                    // The connection closed under the query: servers close
                    // after N queries or when idle (RFC 7766 §6.2.3), which
                    // says nothing of the upstream's health. Send it again on
                    // a new connection, a few times, within the deadline.
                    Err(UpstreamError::Conn(ConnError::Lost(_))) if resends < MAX_RESENDS => {
                        resends += 1;
                        continue;
                    }
                    Err(UpstreamError::Backoff) => {}
                    Err(e) => self.failed(i, &e),
                }
                break;
            }
        }
        self.log
            .event(Level::Debug, "query failed on every upstream", &[]);
        message::synthesize_response(query, Rcode::ServFail).unwrap_or_default()
    }

    fn failed(&self, i: usize, error: &UpstreamError) {
        let backoff = self
            .selector
            .borrow_mut()
            .failed(i, std::time::Instant::now());
        let slot = &self.slots[i];
        // Authentication failures need the operator (fix the config or the
        // server); the rest are transient and the next upstream serves.
        let (level, message) = match error {
            UpstreamError::Auth(_) => (Level::Error, "upstream refused"),
            _ => (Level::Warn, "upstream failed"),
        };
        let check = error.check();
        let mut fields: Vec<(&str, &dyn std::fmt::Display)> = vec![("upstream", &slot.config.name)];
        // An upstream without a section name is named by its address already.
        if slot.config.name != slot.config.addr.to_string() {
            fields.push(("addr", &slot.config.addr));
        }
        fields.push(("check", &check));
        fields.push(("error", error));
        let presented;
        if let UpstreamError::Auth(AuthError::Pin(m)) = error {
            presented = DisplayPins(&m.presented).to_string();
            fields.push(("presented_pins", &presented));
        }
        let retry = format!("{}s", backoff.as_secs());
        fields.push(("retry_in", &retry));
        self.log.event(level, message, &fields);
    }

    async fn exchange(&self, i: usize, wire: &[u8]) -> Result<Vec<u8>, UpstreamError> {
        let conn = self.connection(i).await?;
        Ok(conn.exchange(wire).await?)
    }

    /// The live connection to upstream `i`, connecting if there is none.
    async fn connection(&self, i: usize) -> Result<Conn, UpstreamError> {
        let slot = &self.slots[i];
        if let Some(c) = slot.conn.borrow().as_ref().filter(|c| c.is_alive()) {
            return Ok(c.clone());
        }
        let waited_since = Instant::now();
        let _one_at_a_time = slot.connecting.lock().await;
        if let Some(c) = slot.conn.borrow().as_ref().filter(|c| c.is_alive()) {
            return Ok(c.clone());
        }
        // A connect that ran (and failed) while we waited is our answer too;
        // an upstream in backoff gets at most one connect per BACKOFF_BASE.
        let last = *slot.last_connect.borrow();
        if let Some(t) = last {
            let in_backoff = !self
                .selector
                .borrow()
                .is_ready(i, std::time::Instant::now());
            if t >= waited_since || (in_backoff && t.elapsed() < BACKOFF_BASE) {
                return Err(UpstreamError::Backoff);
            }
        }
        *slot.last_connect.borrow_mut() = Some(Instant::now());
        let old = slot.conn.borrow_mut().take();
        if let Some(old) = old {
            let reason = old.close_reason().unwrap_or("unknown");
            self.log.event(
                Level::Debug,
                "upstream connection closed",
                &[("upstream", &slot.config.name), ("reason", &reason)],
            );
        }
        let tls = loop {
            let choice = slot.tls_choice.get();
            let tcp = TcpStream::connect(slot.config.addr)
                .await
                .map_err(UpstreamError::Connect)?;
            let handshake = TlsConnector::from(slot.tls[choice].clone())
                .connect(slot.name.clone(), tcp)
                .await;
            match handshake {
                Ok(tls) => break tls,
                Err(e) => {
                    if let Some(auth) = AuthError::from_handshake(&e) {
                        return Err(UpstreamError::Auth(auth.clone()));
                    }
                    if choice + 1 >= slot.tls.len() {
                        return Err(UpstreamError::Handshake(e));
                    }
                    // The server may not offer the preferred suites: use the
                    // next configuration from now on.
                    self.log.event(
                        Level::Debug,
                        "upstream handshake failed; retrying with all cipher suites",
                        &[("upstream", &slot.config.name), ("error", &e)],
                    );
                    slot.tls_choice.set(choice + 1);
                }
            }
        };
        self.log.event(
            Level::Debug,
            "upstream connected",
            &[("upstream", &slot.config.name), ("addr", &slot.config.addr)],
        );
        let conn = Conn::spawn(tls, self.conn_capacity, self.conn_timeouts);
        *slot.conn.borrow_mut() = Some(conn.clone());
        Ok(conn)
    }
}

/// Shared handle used by the listeners.
pub type SharedResolver = Rc<Resolver>;
