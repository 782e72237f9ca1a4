//! Sends client queries upstream: picks the upstream (priority order with
//! backoff), keeps persistent pipelined connections to each upstream (one,
//! and a second while one is saturated: [`spread`]), pads the
//! query (RFC 8467), enforces the deadlines and restores the client's ID.
//!
//! Every query ends in an answer or SERVFAIL within `query_timeout`; the
//! attempt policy (order, per-attempt time, resends, when to give up) is the
//! core's [`Attempts`], failures are counted once per connection event by
//! the core's [`Selector`], and when to connect and with which TLS
//! configuration is the core's [`ConnectPolicy`].

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::core::admission::SourceKey;
use crate::core::attempt::{AttemptId, Attempts, Next, Outcome, Verdict};
use crate::core::connect::ConnectPolicy;
use crate::core::message::{self, MessageError, Query, Rcode, Response};
use crate::core::pins::{self, DisplayPins};
use crate::core::spread::{self, Pick};
use crate::core::stats::{ChainCert, Check, Stats, UpstreamGauges};
use crate::core::upstream_conn::{QueryBudget, UpstreamTimeouts};
use crate::core::upstreams::Selector;
use crate::shell::config::{ProxyConfig, UpstreamConfig};
use crate::shell::conn::{Conn, ConnError};
use crate::shell::log::{Level, Log};
use crate::shell::quick_ack::QuickAck;
use crate::shell::readiness::DrainingReads;
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
    /// The failed check, as the failure metric counts it.
    pub fn metric(&self) -> Check {
        match self {
            UpstreamError::Auth(AuthError::Chain(_)) => Check::Ca,
            UpstreamError::Auth(AuthError::Name { .. }) => Check::Name,
            UpstreamError::Auth(AuthError::Pin(_)) => Check::Pin,
            UpstreamError::Timeout(_) => Check::Timeout,
            UpstreamError::Mismatch | UpstreamError::Malformed(_) => Check::Protocol,
            _ => Check::Network,
        }
    }

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
    /// Its entry in [`Stats::upstreams`] (keyed by name, see
    /// [`Stats::slot`]).
    stat: usize,
    /// Its TLS configuration (see [`tls::upstream_config`]).
    tls: Arc<ClientConfig>,
    /// The verifier behind `tls`: it keeps the last verified chain.
    verifier: Arc<PinnedVerifier>,
    /// The pin warnings last logged (no backup, leaf only), so each change
    /// is logged once, not every handshake.
    warned: Cell<(bool, bool)>,
    name: ServerName<'static>,
    /// Its connections, oldest first; at most [`spread::MAX_CONNECTIONS`]
    /// take queries.
    conns: RefCell<Vec<Conn>>,
    /// How many queries it answers on one connection, if it limits them
    /// (learned from its closes).
    budget: Rc<RefCell<QueryBudget>>,
    /// Serialises connects so a burst of queries opens one connection.
    connecting: tokio::sync::Mutex<()>,
    /// When to connect: the core decides.
    policy: RefCell<ConnectPolicy>,
    /// Connection attempts so far: the event number of failures on the
    /// current (or last) connection.
    generation: Cell<u64>,
}

impl Slot {
    /// Connections that take queries (the gauge).
    fn live_connections(&self) -> u32 {
        let live = self.conns.borrow().iter().filter(|c| c.is_alive()).count();
        u32::try_from(live).unwrap_or(u32::MAX)
    }

    /// Queries waiting for the windows, and the windows, summed over the
    /// connections (the gauges).
    fn windows(&self) -> (u32, u32) {
        let conns = self.conns.borrow();
        let sum = |f: fn(&Conn) -> usize| {
            u32::try_from(conns.iter().map(f).sum::<usize>()).unwrap_or(u32::MAX)
        };
        (sum(Conn::waiting), sum(Conn::window))
    }
}

/// [`Pick`] with the connections themselves.
enum Picked {
    Use(Conn),
    Open { meanwhile: Option<Conn> },
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
    /// The attempt's time was up first ([`Next::Expired`]).
    Expired,
}

/// What an exchange brings back: the answer as parsed, its round-trip time,
/// and when it was read (the clock reading the round trip ended with, which
/// the caller takes as its own "now").
type Exchanged = (Result<Response, MessageError>, Duration, std::time::Instant);

/// An attempt in flight: its name, upstream and time, and the exchange.
type Running<'a> = (
    AttemptId,
    usize,
    Duration,
    Pin<Box<dyn Future<Output = Result<Exchanged, Exchange>> + 'a>>,
);

/// How an attempt ended: its name, upstream and time, and the exchange's
/// result.
type Ended = (AttemptId, usize, Duration, Result<Exchanged, Exchange>);

/// The first of the `running` attempts to end, removed from them. Pending
/// while none is running.
async fn first_of(running: &mut Vec<Running<'_>>) -> Ended {
    std::future::poll_fn(|cx| {
        for at in 0..running.len() {
            if let Poll::Ready(result) = running[at].3.as_mut().poll(cx) {
                let (id, upstream, budget, _) = running.swap_remove(at);
                return Poll::Ready((id, upstream, budget, result));
            }
        }
        Poll::Pending
    })
    .await
}

/// Sends queries to the upstreams.
pub struct Resolver {
    slots: Vec<Slot>,
    selector: RefCell<Selector>,
    query_timeout: Duration,
    upstream_timeout: Duration,
    conn_timeouts: UpstreamTimeouts,
    conn_capacity: usize,
    log: Log,
    stats: Rc<RefCell<Stats>>,
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
    /// Counts into `stats`, under each upstream's name.
    pub fn new(
        config: &ProxyConfig,
        log: Log,
        stats: Rc<RefCell<Stats>>,
    ) -> Result<Self, SetupError> {
        let mut slots = Vec::with_capacity(config.upstreams.len());
        for up in &config.upstreams {
            let fail = |error: SetupErrorKind| SetupError {
                upstream: up.name.clone(),
                error,
            };
            let anchors = match &up.ca {
                Some(ca) => Some(tls::anchors_from_pem(&ca.pem).map_err(|e| fail(e.into()))?),
                None => None,
            };
            let expiry = up
                .ca
                .as_ref()
                .map(|ca| tls::anchor_expiry_from_pem(&ca.pem))
                .unwrap_or_default();
            let verifier =
                Arc::new(PinnedVerifier::new(anchors, up.pins.clone()).with_anchor_expiry(expiry));
            let tls = tls::upstream_config(verifier.clone()).map_err(|e| fail(e.into()))?;
            let name = tls::server_name(&up.auth_name)
                .map_err(|e| fail(SetupErrorKind::Name(e.to_string())))?;
            slots.push(Slot {
                config: up.clone(),
                stat: stats.borrow_mut().slot(&up.name),
                policy: RefCell::default(),
                tls,
                verifier,
                warned: Cell::new((false, false)),
                name,
                conns: RefCell::new(Vec::with_capacity(spread::MAX_CONNECTIONS)),
                budget: Rc::default(),
                connecting: tokio::sync::Mutex::new(()),
                generation: Cell::new(0),
            });
        }
        Ok(Self {
            selector: RefCell::new(Selector::with(
                slots.len(),
                config.strategy,
                config.hedge_percent,
            )),
            slots,
            query_timeout: config.query_timeout,
            upstream_timeout: config.upstream_timeout,
            conn_timeouts: UpstreamTimeouts {
                idle: config.upstream_idle_timeout,
                stall: config.upstream_timeout,
            },
            conn_capacity: config.max_inflight.clamp(1, 65_536),
            log,
            stats,
        })
    }

    /// Each upstream's gauges at `now`, written into its entry of `out`
    /// (aligned with [`Stats::upstreams`]); entries of upstreams this
    /// resolver does not have are left alone.
    pub fn gauges(&self, now: std::time::Instant, out: &mut [UpstreamGauges]) {
        let selector = self.selector.borrow();
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(g) = out.get_mut(slot.stat) {
                let (waiting, window) = slot.windows();
                *g = UpstreamGauges {
                    configured: true,
                    up: selector.is_up(i, now),
                    connections: slot.live_connections(),
                    waiting,
                    window,
                    srtt: selector.rtt(i).map(|r| r.srtt),
                };
            }
        }
    }

    /// Readiness: see [`Selector::reachable`].
    pub fn reachable(&self, now: std::time::Instant) -> bool {
        self.selector.borrow().reachable(now)
    }

    /// Answers one client query: the upstream's answer with the client's ID,
    /// fit for a plain-DNS client, or a SERVFAIL when no upstream answered
    /// within the deadline. Which upstream, for how long, whether to send
    /// again or hedge, and which answer wins is the core's [`Attempts`];
    /// this only performs the attempts, at most two at a time. Also names
    /// the upstream that answered (for the query log and the cache); `None`
    /// when the proxy answered SERVFAIL itself. And the last clock reading
    /// taken, when it was decided (for the cache).
    ///
    /// `received` is when the query came in: its deadline counts from
    /// then. The clock is read once after each wait, not for each decision
    /// (each reading is a host call in the component). `source` is whose
    /// turn it takes while an upstream connection's window is full.
    pub async fn resolve(
        &self,
        query: &Query,
        received: std::time::Instant,
        source: SourceKey,
    ) -> (Response, Option<&str>, std::time::Instant) {
        let (wire, padding) = query.padded(message::QUERY_PADDING_BLOCK);
        let mut now = received;
        let order = self.selector.borrow_mut().order(now);
        let mut attempts = Attempts::new(order, now, self.query_timeout, self.upstream_timeout);
        let mut running: Vec<Running<'_>> = Vec::with_capacity(2);
        let mut kept: Option<(Response, usize)> = None;
        // The query's one timer, set to the core's next time (an attempt's
        // end, or its hedge) for each wait, and reset only when that moved.
        let timer = tokio::time::sleep_until(attempts.deadline().into());
        tokio::pin!(timer);
        let mut armed = None;
        loop {
            let next = attempts.next(now, &mut self.selector.borrow_mut());
            let ended = match next {
                Next::Try {
                    id,
                    upstream,
                    budget,
                    hedge,
                } => {
                    if hedge {
                        self.stats.borrow_mut().upstreams[self.slots[upstream].stat].hedges += 1;
                    }
                    let exchange = self.exchange(upstream, &wire, source, now);
                    running.push((id, upstream, budget, Box::pin(exchange)));
                    continue;
                }
                // Dropping its exchange abandons the query on its
                // connection. The core names it until it is recorded.
                Next::Expired { id } => match running.iter().position(|r| r.0 == id) {
                    Some(at) => {
                        let (id, upstream, budget, _) = running.swap_remove(at);
                        (id, upstream, budget, Err(Exchange::Expired))
                    }
                    None => {
                        let mut selector = self.selector.borrow_mut();
                        attempts.record(id, Outcome::TimedOut, now, None, &mut selector);
                        continue;
                    }
                },
                Next::Wait { until } => {
                    if armed != Some(until) {
                        timer.as_mut().reset(until.into());
                        armed = Some(until);
                    }
                    // Biased: no random pick of the branch to poll first.
                    tokio::select! {
                        biased;
                        ended = first_of(&mut running) => ended,
                        // The core's time came: an attempt's end, or a
                        // hedge is due.
                        () = &mut timer => {
                            armed = None;
                            now = std::time::Instant::now();
                            continue;
                        }
                    }
                }
                Next::GiveUp => break,
            };
            // An answer comes with the reading its round trip ended with.
            now = match &ended {
                (_, _, _, Ok((_, _, answered))) => *answered,
                _ => std::time::Instant::now(),
            };
            let (id, i, budget, result) = ended;
            // The event a failure belongs to: the connection (attempt) the
            // query was on, or being connected, when it ended.
            let event = self.slots[i].generation.get();
            // The answer comes with its round-trip time; nothing else has one.
            let (outcome, error, answer) = match result {
                Ok((Ok(answer), rtt, _)) if answer.answers(query) => {
                    let outcome = if answer.declines() {
                        Outcome::Declined
                    } else {
                        Outcome::Answered
                    };
                    (outcome, None, Some((answer, rtt)))
                }
                Ok((Ok(_), _, _)) => (Outcome::Mismatch, Some(UpstreamError::Mismatch), None),
                // An answer that does not parse answers nothing either.
                Ok((Err(e), _, _)) => (Outcome::Mismatch, Some(UpstreamError::Malformed(e)), None),
                Err(Exchange::Lost { progress, error }) => {
                    (Outcome::Lost { progress }, Some(error), None)
                }
                // Skipped, not failed: nothing was tried.
                Err(Exchange::Failed(UpstreamError::Backoff)) => {
                    (Outcome::NoConnection, None, None)
                }
                Err(Exchange::Failed(e)) => (Outcome::NoConnection, Some(e), None),
                Err(Exchange::Expired) => (
                    Outcome::TimedOut,
                    Some(UpstreamError::Timeout(budget)),
                    None,
                ),
            };
            if let Some(error) = error.filter(|_| outcome.is_failure()) {
                self.stats.borrow_mut().upstreams[self.slots[i].stat].failed(error.metric());
                self.failed(i, event, &error);
            }
            let rtt = answer.as_ref().map(|&(_, rtt)| rtt);
            let verdict = attempts.record(id, outcome, now, rtt, &mut self.selector.borrow_mut());
            let Some((answer, _)) = answer else {
                continue;
            };
            self.selector.borrow_mut().succeeded(i);
            if verdict != Verdict::Drop {
                kept = Some((answer, i));
            }
            if verdict == Verdict::Answer {
                break;
            }
        }
        // The winning answer, else the SERVFAIL or REFUSED kept.
        if let Some((mut answer, i)) = kept {
            answer.set_id(query.id());
            // The client is on plain DNS: the OPT the proxy added goes, and
            // so do the upstream's padding (RFC 7830 §1) and keepalive
            // option (RFC 7828 §3.2.2).
            if answer.fit_for_client(padding).is_ok() {
                return (answer, Some(&self.slots[i].config.name), now);
            }
        }
        self.log
            .event(Level::Debug, "query failed on every upstream", &[]);
        (Response::reply(query, Rcode::ServFail), None, now)
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

    /// Sends `wire` to upstream `i` and parses the answer: the one walk of
    /// it, which also finds the upstream's edns-tcp-keepalive timeout (RFC
    /// 7828 §3.3.2), reported to the connection it came on. Also the time
    /// from the query sent to the answer read, and when it was read.
    ///
    /// `now` is the caller's last clock reading, with no wait since. The
    /// query counts as sent then when a connection is there to take it,
    /// and as answered when the connection's reader read it: no clock
    /// reading of its own (each is a host call in the component), unless it
    /// waited for a connection.
    async fn exchange(
        &self,
        i: usize,
        wire: &[u8],
        source: SourceKey,
        now: std::time::Instant,
    ) -> Result<Exchanged, Exchange> {
        let (conn, sent) = self.connection(i, now).await.map_err(Exchange::Failed)?;
        self.stats.borrow_mut().upstreams[self.slots[i].stat].queries += 1;
        let (answer, answered) =
            conn.exchange(wire, sent, source)
                .await
                .map_err(|e| Exchange::Lost {
                    progress: conn.made_progress() || conn.spent_budget(),
                    error: e.into(),
                })?;
        let rtt = answered.saturating_duration_since(sent);
        let mut stats = self.stats.borrow_mut();
        let up = &mut stats.upstreams[self.slots[i].stat];
        up.rtt.observe(rtt);
        up.responses.count(&answer);
        drop(stats);
        let answer = Response::parse(answer);
        if let Some(timeout) = answer.as_ref().ok().and_then(Response::keepalive_timeout) {
            conn.on_keepalive(timeout);
        }
        Ok((answer, rtt, answered))
    }

    /// After a full handshake with upstream `i`: records its verified chain
    /// for the expiry metric and warns (once per change) when its pin set
    /// has no backup pin or pins only the leaf (see [`pins::assess`]).
    fn verified(&self, i: usize) {
        let slot = &self.slots[i];
        let Some(chain) = slot.verifier.take_verified() else {
            return;
        };
        let keys: Vec<_> = chain.iter().map(|(pin, _)| *pin).collect();
        let assessment = pins::assess(slot.verifier.pins(), &keys);
        let warnings = (assessment.no_backup, assessment.leaf_only);
        if slot.warned.replace(warnings) != warnings && assessment.warns() {
            let mut fields: Vec<(&str, &dyn std::fmt::Display)> =
                vec![("upstream", &slot.config.name)];
            if assessment.no_backup {
                fields.push((
                    "no_backup",
                    &"no pin outside the current chain; add a backup pin (RFC 7469 §4.3)",
                ));
            }
            if assessment.leaf_only {
                fields.push(("leaf_only", &"only the leaf key is pinned; pin an intermediate too, leaf keys rotate more often"));
            }
            let presented = DisplayPins(&keys).to_string();
            fields.push(("presented_pins", &presented));
            self.log
                .event(Level::Warn, "pin set is not rotation-safe", &fields);
        }
        let certs = chain
            .iter()
            .zip(&assessment.matched)
            .enumerate()
            .map(|(position, (&(_, not_after), &pinned))| ChainCert {
                position: u8::try_from(position).unwrap_or(u8::MAX),
                not_after,
                pinned,
            })
            .collect();
        let mut stats = self.stats.borrow_mut();
        let up = &mut stats.upstreams[slot.stat];
        up.chain = Some(certs);
        up.no_backup = assessment.no_backup;
        up.leaf_only = assessment.leaf_only;
    }

    /// A connection to upstream `i` for one query: the live one the core's
    /// [`spread::pick`] names, or a new one. Connects are made one at a
    /// time; a query that finds every connection saturated and a connect
    /// under way goes on the least loaded rather than wait. With it, the
    /// clock reading to time the query from: `now` for a connection that
    /// was there, a new reading after opening one.
    async fn connection(
        &self,
        i: usize,
        now: std::time::Instant,
    ) -> Result<(Conn, std::time::Instant), UpstreamError> {
        match self.pick(i) {
            Picked::Use(conn) => Ok((conn, now)),
            Picked::Open { meanwhile } => {
                let conn = self.open(i, meanwhile).await?;
                Ok((conn, std::time::Instant::now()))
            }
        }
    }

    /// A new connection to upstream `i` for [`Self::connection`], or
    /// `meanwhile` (a live, saturated one) if a connect is under way or
    /// the upstream takes no more.
    async fn open(&self, i: usize, meanwhile: Option<Conn>) -> Result<Conn, UpstreamError> {
        let slot = &self.slots[i];
        let _one_at_a_time = match &meanwhile {
            Some(busy) => match slot.connecting.try_lock() {
                Ok(guard) => guard,
                Err(_) => return Ok(busy.clone()),
            },
            None => slot.connecting.lock().await,
        };
        // Another query may have connected while this one waited.
        let meanwhile = match self.pick(i) {
            Picked::Use(conn) => return Ok(conn),
            Picked::Open { meanwhile } => meanwhile,
        };
        // Boxed: connecting holds the TLS handshake (kilobytes), and a
        // future awaited inline is as large as the largest it awaits. Every
        // query's attempt is made, moved and boxed with this one's size,
        // though few ever connect.
        let connected = Box::pin(self.connect(i)).await;
        match (connected, meanwhile) {
            (Ok(conn), _) => Ok(conn),
            // The upstream serves on the connection it has: a connection
            // in addition that it would not take (its limit, a busy
            // accept queue) is no failure of it. A certificate it no
            // longer passes is.
            (Err(e), Some(busy)) if !matches!(e, UpstreamError::Auth(_)) => {
                self.log.event(
                    Level::Debug,
                    "upstream did not take a connection in addition",
                    &[("upstream", &slot.config.name), ("error", &e)],
                );
                Ok(busy)
            }
            (Err(e), _) => Err(e),
        }
    }

    /// Where the next query to upstream `i` goes ([`spread::pick`]), once
    /// the connections that take no more queries are let go.
    fn pick(&self, i: usize) -> Picked {
        let slot = &self.slots[i];
        let mut conns = slot.conns.borrow_mut();
        conns.retain(|conn| {
            if conn.is_alive() {
                return true;
            }
            let reason = conn.close_reason().map_or("unknown", |c| c.as_str());
            let tally = conn.tally();
            self.log.event(
                Level::Debug,
                "upstream connection closed",
                &[
                    ("upstream", &slot.config.name),
                    ("reason", &reason),
                    ("written", &tally.written),
                    ("replies", &tally.replies),
                    ("lost", &tally.lost),
                ],
            );
            false
        });
        // Connects are one at a time and each asks first: never more than
        // the cap (and no allocation per query).
        let mut inflight = [0; spread::MAX_CONNECTIONS];
        for (n, conn) in inflight.iter_mut().zip(conns.iter()) {
            *n = conn.inflight();
        }
        match spread::pick(&inflight[..conns.len().min(spread::MAX_CONNECTIONS)]) {
            Pick::Use(c) => Picked::Use(conns[c].clone()),
            Pick::Open { meanwhile } => Picked::Open {
                meanwhile: meanwhile.map(|c| conns[c].clone()),
            },
        }
    }

    /// Opens one more connection to upstream `i`, if its backoff allows.
    async fn connect(&self, i: usize) -> Result<Conn, UpstreamError> {
        let slot = &self.slots[i];
        // A failed attempt of a query ahead of us is already counted in the
        // selector: `resolve` counts it in the same turn as the lock is
        // released, before this task runs again.
        let now = std::time::Instant::now();
        let may_start = slot
            .policy
            .borrow()
            .may_start(&self.selector.borrow(), i, now);
        if !may_start {
            return Err(UpstreamError::Backoff);
        }
        slot.policy.borrow_mut().start(now);
        slot.generation.set(slot.generation.get() + 1);
        let tcp = TcpStream::connect(slot.config.addr)
            .await
            .map_err(UpstreamError::Connect)?;
        // Or a pipelined query waits for the ACK of the one before
        // (Nagle). In the component the host sets it: WASI 0.2 cannot.
        #[cfg(not(target_os = "wasi"))]
        let _ = tcp.set_nodelay(true);
        let ack = QuickAck::of(&tcp);
        let tls = TlsConnector::from(slot.tls.clone())
            .connect(slot.name.clone(), DrainingReads(tcp))
            .await
            .map_err(|e| match AuthError::from_handshake(&e) {
                Some(auth) => UpstreamError::Auth(auth.clone()),
                None => UpstreamError::Handshake(e),
            })?;
        let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        self.log.event(
            Level::Debug,
            "upstream connected",
            &[
                ("upstream", &slot.config.name),
                ("addr", &slot.config.addr),
                ("resumed", &resumed),
            ],
        );
        self.stats.borrow_mut().upstreams[slot.stat].handshakes[usize::from(resumed)] += 1;
        self.verified(i);
        let conn = Conn::spawn(tls, ack, self.conn_capacity, self.conn_timeouts);
        // `now` is from before the handshake; a budget lasts a minute.
        conn.set_budget(slot.budget.borrow().budget(now));
        let (learn, log, name) = (
            slot.budget.clone(),
            self.log.clone(),
            slot.config.name.clone(),
        );
        conn.on_close(move |state| {
            let now = std::time::Instant::now();
            let mut budget = learn.borrow_mut();
            let before = budget.budget(now);
            budget.on_closed(state, now);
            let after = budget.budget(now);
            // A close only ever teaches a budget; log it when it is news.
            if let Some(queries) = after.filter(|_| after != before) {
                log.event(
                    Level::Debug,
                    "upstream query budget",
                    &[("upstream", &name), ("queries", &queries)],
                );
            }
        });
        let (log, stats, name, stat) = (
            self.log.clone(),
            self.stats.clone(),
            slot.config.name.clone(),
            slot.stat,
        );
        conn.on_window_probe(move |cause| {
            stats.borrow_mut().upstreams[stat].window_probes += 1;
            log.event(
                Level::Debug,
                "upstream window probe",
                &[("upstream", &name), ("cause", &cause.as_str())],
            );
        });
        slot.conns.borrow_mut().push(conn.clone());
        Ok(conn)
    }
}

/// Shared handle used by the listeners.
pub type SharedResolver = Rc<Resolver>;
