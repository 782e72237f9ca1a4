//! Sends client queries upstream: picks the upstream (priority order with
//! backoff), keeps one persistent pipelined connection per upstream, pads the
//! query (RFC 8467), enforces the deadlines and restores the client's ID.
//!
//! Every query ends in an answer or SERVFAIL within `query_timeout`; the
//! attempt policy (order, per-attempt time, resends, when to give up) is the
//! core's [`Attempts`], and failures are counted once per connection event
//! by the core's [`Selector`].

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;

use crate::core::attempt::{Attempts, Next, Outcome};
use crate::core::message::{self, MessageError, Query, Rcode, Response};
use crate::core::pins::DisplayPins;
use crate::core::upstreams::{BACKOFF_BASE, Selector};
use crate::shell::config::{ProxyConfig, UpstreamConfig};
use crate::shell::conn::{Conn, ConnError, ConnTimeouts};
use crate::shell::log::{Level, Log};
use crate::shell::tls::{self, AuthError, PinnedVerifier, TrustError};

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
    /// The answer is not a well-formed DNS message (RFC 1035 §4.1).
    #[error("malformed answer: {0}")]
    Malformed(MessageError),
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
            UpstreamError::Mismatch | UpstreamError::Malformed(_) => "protocol",
            _ => "network",
        }
    }
}

struct Slot {
    config: UpstreamConfig,
    /// TLS configurations in the order to try them (see
    /// [`tls::client_configs`]); `tls_choice` is the first that has not failed.
    tls: Vec<Arc<ClientConfig>>,
    tls_choice: Cell<usize>,
    name: ServerName<'static>,
    conn: RefCell<Option<Conn>>,
    /// Serialises connects so a burst of queries opens one connection.
    connecting: tokio::sync::Mutex<()>,
    last_connect: RefCell<Option<Instant>>,
    /// Connection attempts so far: the event number of failures on the
    /// current (or last) connection.
    generation: Cell<u64>,
}

/// How an exchange on an upstream ended without an answer.
enum Exchange {
    /// No connection could be had.
    Failed(UpstreamError),
    /// The connection closed with the query in flight.
    Lost {
        /// Whether that connection had answered anything.
        progress: bool,
        error: UpstreamError,
    },
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
                tls_choice: Cell::new(0),
                name,
                conn: RefCell::new(None),
                connecting: tokio::sync::Mutex::new(()),
                last_connect: RefCell::new(None),
                generation: Cell::new(0),
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
    /// fit for a plain-DNS client, or a SERVFAIL when no upstream answered
    /// within the deadline. Which upstream, for how long, and whether to send
    /// again is the core's [`Attempts`]; this only performs the attempts.
    pub async fn resolve(&self, query: &Query) -> Response {
        let (wire, padding) = query.padded(message::QUERY_PADDING_BLOCK);
        let now = std::time::Instant::now();
        let order = self.selector.borrow().order(now);
        let mut attempts = Attempts::new(order, now, self.query_timeout, self.upstream_timeout);
        while let Next::Try {
            upstream: i,
            budget,
        } = attempts.next(std::time::Instant::now())
        {
            let result = timeout(budget, self.exchange(i, &wire)).await;
            // The event a failure belongs to: the connection (attempt) the
            // query was on, or being connected, when it ended.
            let event = self.slots[i].generation.get();
            let (outcome, error) = match result.map(|r| r.map(Response::parse)) {
                Ok(Ok(Ok(mut answer))) if answer.answers(query) => {
                    self.selector.borrow_mut().succeeded(i);
                    answer.set_id(query.id());
                    // The client is on plain DNS: the OPT the proxy added
                    // goes, and so does the upstream's padding (RFC 7830 §1).
                    if answer.fit_for_client(padding).is_err() {
                        break;
                    }
                    return answer;
                }
                Ok(Ok(Ok(_))) => (Outcome::Mismatch, UpstreamError::Mismatch),
                // An answer that does not parse answers nothing either.
                Ok(Ok(Err(e))) => (Outcome::Mismatch, UpstreamError::Malformed(e)),
                Ok(Err(Exchange::Lost { progress, error })) => (Outcome::Lost { progress }, error),
                // Skipped, not failed: nothing was tried.
                Ok(Err(Exchange::Failed(UpstreamError::Backoff))) => {
                    attempts.record(Outcome::NoConnection);
                    continue;
                }
                Ok(Err(Exchange::Failed(e))) => (Outcome::NoConnection, e),
                Err(_) => (Outcome::TimedOut, UpstreamError::Timeout(budget)),
            };
            if outcome.is_failure() {
                self.failed(i, event, &error);
            }
            attempts.record(outcome);
        }
        self.log
            .event(Level::Debug, "query failed on every upstream", &[]);
        query.reply(Rcode::ServFail)
    }

    /// Counts a failure of upstream `i` in `event` and logs it, once per
    /// event (see [`Selector::failed`]).
    fn failed(&self, i: usize, event: u64, error: &UpstreamError) {
        let Some(backoff) = self
            .selector
            .borrow_mut()
            .failed(i, event, std::time::Instant::now())
        else {
            return;
        };
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

    async fn exchange(&self, i: usize, wire: &[u8]) -> Result<Vec<u8>, Exchange> {
        let conn = self.connection(i).await.map_err(Exchange::Failed)?;
        conn.exchange(wire).await.map_err(|e| Exchange::Lost {
            progress: conn.made_progress(),
            error: e.into(),
        })
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
        // A connect that ran (and failed) while we waited is our answer too.
        // An upstream in backoff is connected to only when the selector
        // allows it (every upstream in backoff: the least recently failed,
        // so there is no blackout), and then at most once per BACKOFF_BASE.
        let last = *slot.last_connect.borrow();
        if let Some(t) = last {
            let now = std::time::Instant::now();
            let (ready, allowed) = {
                let selector = self.selector.borrow();
                (selector.is_ready(i, now), selector.may_connect(i, now))
            };
            if t >= waited_since || !allowed || (!ready && t.elapsed() < BACKOFF_BASE) {
                return Err(UpstreamError::Backoff);
            }
        }
        *slot.last_connect.borrow_mut() = Some(Instant::now());
        slot.generation.set(slot.generation.get() + 1);
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
