//! Runs the proxy component: links exactly the `proxy` world (with a closed
//! stream's destructor that never blocks it, see [`crate::linger`]), grants it its
//! sockets (see [`crate::policy`]) and nothing else, hands it the validated
//! configuration, renders its log events, bounds its memory and CPU (see
//! [`crate::watchdog`]) and restarts it when it traps.
//!
//! It runs `workers` instances ([`run`]), each in its own store on its own
//! thread with its own single-threaded runtime, as isolated from one another
//! as from the host: each binds the listen addresses itself with
//! SO_REUSEPORT (the patched wasmtime-wasi in `vendor/`, its PATCHED.md) and
//! the kernel spreads clients over them, by the hash of source and
//! destination address and port. Each has its own socket policy, upstream
//! connections, cache and memory limit, and its share of the process-wide
//! limits (`ProxyConfig::worker_share`); a trap restarts that one alone.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::p2::bindings::sockets::udp::{IncomingDatagramStream, OutgoingDatagramStream};
use wasmtime_wasi::runtime::ThreadRuntime;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use dnsproxy_core::core::cache::{CacheCounters, CacheReport};
use dnsproxy_core::core::stats;

use crate::aead::Key;
use crate::config::{AuthName, CacheSettings, Level, ProxyConfig, Strategy, UpstreamConfig};
use crate::metrics::Metrics;
use crate::policy::SocketPolicy;
use crate::policy::refusals::LOG_EVERY;
use crate::readiness::{Handle, Source};
use crate::wait_timer::{Until, WaitTimer};
use crate::watchdog::{Life, Next, Restarts, Stuck, Ticker, Verdict, Watchdog};

/// Host bindings of the `proxy` world (generated from `wit/world.wit`).
mod bindings {
    #![allow(missing_docs, unreachable_pub)]
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "proxy",
        with: {
            "wasi": wasmtime_wasi::p2::bindings,
            "dnsproxy:proxy/aead.key": crate::aead::Key,
        },
        imports: {
            "dnsproxy:proxy/aead.[constructor]key": trappable,
            "dnsproxy:proxy/aead.[method]key.seal": trappable,
            "dnsproxy:proxy/aead.[method]key.open": trappable,
            "dnsproxy:proxy/readiness.wait": trappable,
        },
        // wasmtime-wasi's host functions need it.
        require_store_data_send: true,
    });
}

use bindings::Proxy;
use bindings::dnsproxy::proxy::aead as wit_aead;
use bindings::dnsproxy::proxy::config as wit_config;
use bindings::dnsproxy::proxy::datagram_batch as wit_datagram_batch;
use bindings::dnsproxy::proxy::log as wit_log;
use bindings::dnsproxy::proxy::metrics as wit_metrics;
use bindings::dnsproxy::proxy::readiness as wit_readiness;
use bindings::dnsproxy::proxy::tcp_ack as wit_tcp_ack;
use bindings::dnsproxy::proxy::tcp_send as wit_tcp_send;
use bindings::dnsproxy::proxy::types as wit_types;
use bindings::dnsproxy::proxy::watchdog as wit_watchdog;

/// Memory one component instance may use, besides its cache
/// ([`memory_limit`]).
pub const MEMORY_LIMIT: usize = 512 << 20;

/// The configuration the component is to serve and its generation number:
/// the one at start (1), replaced by each reload the host accepts
/// ([`Published::publish`]). Every instance reads it through the WIT
/// `config` interface, a restarted one included, and its socket policy is
/// swapped when it takes a new generation.
#[derive(Debug)]
pub struct Published {
    current: std::sync::Mutex<(u64, Arc<ProxyConfig>)>,
}

impl Published {
    /// Generation 1: `config`.
    pub fn new(config: ProxyConfig) -> Arc<Self> {
        Arc::new(Self {
            current: std::sync::Mutex::new((1, Arc::new(config))),
        })
    }

    /// The generation number and its configuration.
    pub fn current(&self) -> (u64, Arc<ProxyConfig>) {
        let current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (current.0, current.1.clone())
    }

    /// Makes `config` the next generation; returns its number. The
    /// component takes it within about a second (its poll).
    pub fn publish(&self, config: ProxyConfig) -> u64 {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = (current.0 + 1, Arc::new(config));
        current.0
    }
}

/// The store data of one component instance.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    /// What it serves.
    published: Arc<Published>,
    /// What its sockets may do: its own, following the generation it
    /// serves (another worker may still serve the previous one).
    policy: SocketPolicy,
    /// Which worker it is: its share of the limits and its slot in the
    /// metrics.
    worker: usize,
    /// How many workers there are.
    workers: std::num::NonZeroUsize,
    /// The generation this instance last took (0: none yet).
    taken: u64,
    /// Heartbeats so far: calls of `watchdog.heartbeat` and of
    /// `readiness.wait` (each a turn of the guest's event loop).
    heartbeats: u64,
    /// Set by each epoch tick: the next wait first lets the worker's
    /// runtime turn once (see [`block_on`]).
    turn_runtime: bool,
    /// Where `metrics.push` adds up.
    metrics: Arc<Metrics>,
    /// Its `readiness` watch set, in `table` (its pollable is a child of
    /// it), for the life of the store.
    watch_set: Resource<crate::readiness::WatchSet>,
    /// The watch set's pollable.
    watch_set_pollable: Resource<wasmtime_wasi::p2::DynPollable>,
    /// Its `wasi:clocks/monotonic-clock`, which `readiness.wait` reads too.
    clock: Clock,
    /// The timer of its `readiness.wait`, kept between waits.
    wait_timer: WaitTimer,
}

/// An instance's monotonic clock: nanoseconds since the instance started,
/// as wasmtime-wasi's default, and `Copy`, so that `readiness.wait` reports
/// the reading of the very clock the component's `monotonic-clock.now`
/// reads.
#[derive(Clone, Copy)]
struct Clock {
    origin: Instant,
}

impl Clock {
    /// The instant `ns` of this clock reads as (none past what `Instant`
    /// can hold).
    fn instant(self, ns: u64) -> Option<Instant> {
        self.origin.checked_add(Duration::from_nanos(ns))
    }
}

impl wasmtime_wasi::HostMonotonicClock for Clock {
    fn resolution(&self) -> u64 {
        // CLOCK_MONOTONIC (std's `Instant`) counts nanoseconds.
        1
    }

    fn now(&self) -> u64 {
        // 2^64 ns is over 584 years.
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit_types::Host for State {}

impl wit_aead::Host for State {}

impl wit_aead::HostKey for State {
    fn new(
        &mut self,
        algorithm: wit_aead::Algorithm,
        secret: Vec<u8>,
    ) -> wasmtime::Result<Resource<Key>> {
        let algorithm = match algorithm {
            wit_aead::Algorithm::Aes128Gcm => &ring::aead::AES_128_GCM,
            wit_aead::Algorithm::Aes256Gcm => &ring::aead::AES_256_GCM,
            wit_aead::Algorithm::Chacha20Poly1305 => &ring::aead::CHACHA20_POLY1305,
        };
        Ok(self.table.push(Key::new(algorithm, &secret)?)?)
    }

    fn seal(
        &mut self,
        key: Resource<Key>,
        nonce: Vec<u8>,
        aad: Vec<u8>,
        plaintext: Vec<u8>,
    ) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&key)?.seal(&nonce, &aad, plaintext)?)
    }

    fn open(
        &mut self,
        key: Resource<Key>,
        nonce: Vec<u8>,
        aad: Vec<u8>,
        sealed: Vec<u8>,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.table.get(&key)?.open(&nonce, &aad, sealed)?)
    }

    fn drop(&mut self, key: Resource<Key>) -> wasmtime::Result<()> {
        self.table.delete(key)?;
        Ok(())
    }
}

impl wit_watchdog::Host for State {
    fn heartbeat(&mut self) {
        self.heartbeats += 1;
    }
}

impl wit_tcp_ack::Host for State {
    fn quick_ack(&mut self, socket: Resource<wasmtime_wasi::p2::TcpSocket>) {
        // The handle is the guest's own socket, borrowed for the call: the
        // canonical ABI checked it is live and of this type.
        if let Ok(socket) = self.table.get(&socket) {
            socket.quick_ack();
        }
    }
}

impl wit_tcp_send::Host for State {
    fn send(
        &mut self,
        socket: Resource<wasmtime_wasi::p2::TcpSocket>,
        bytes: Vec<u8>,
    ) -> Result<u64, wit_tcp_send::ErrorCode> {
        // The guest's own socket, borrowed for the call: the canonical ABI
        // checked it is live and of this type.
        let socket = self
            .table
            .get(&socket)
            .map_err(|_| wit_tcp_send::ErrorCode::InvalidState)?;
        socket.send_now(&bytes).map(|n| n as u64)
    }
}

/// Datagrams a `datagram-batch` call moves at most: one `recvmmsg` or
/// `sendmmsg`, as many as `wasi:sockets` moves per call.
const DATAGRAM_BATCH: usize = wasmtime_wasi::sockets::mmsg::MAX_BATCH;

impl wit_datagram_batch::Host for State {
    fn receive(
        &mut self,
        datagrams: Resource<IncomingDatagramStream>,
        max: u32,
    ) -> Result<Vec<u8>, wit_datagram_batch::ErrorCode> {
        // The guest's own stream, borrowed for the call: the canonical ABI
        // checked it is live and of this type.
        let stream = self
            .table
            .get_mut(&datagrams)
            .map_err(|_| wit_datagram_batch::ErrorCode::InvalidState)?;
        match receive_packed(stream, max) {
            Err(wit_datagram_batch::ErrorCode::WouldBlock) => Ok(Vec::new()),
            received => received,
        }
    }

    fn send(
        &mut self,
        datagrams: Resource<OutgoingDatagramStream>,
        packed: Vec<u8>,
    ) -> Result<u32, wit_datagram_batch::ErrorCode> {
        let stream = self
            .table
            .get_mut(&datagrams)
            .map_err(|_| wit_datagram_batch::ErrorCode::InvalidState)?;
        let mut batch: [(&[u8], Option<SocketAddr>); DATAGRAM_BATCH] =
            [(&[], None); DATAGRAM_BATCH];
        let mut n = 0;
        for (slot, datagram) in batch.iter_mut().zip(packed_datagrams::read(&packed)) {
            let (payload, to) =
                datagram.map_err(|_| wit_datagram_batch::ErrorCode::InvalidArgument)?;
            *slot = (payload, Some(to));
            n += 1;
        }
        // Each destination is checked by the stream (the socket policy), as
        // for `wasi:sockets`' `send`.
        let sent = stream.try_send_many(batch[..n].iter().copied())?;
        Ok(u32::try_from(sent).unwrap_or(u32::MAX))
    }
}

/// Up to `max` datagrams (at most [`DATAGRAM_BATCH`]) from `stream`, laid
/// out in one list (`datagram-batch` in the WIT): at least one, or
/// `would-block` when none is queued, or the error of the socket's read.
fn receive_packed(
    stream: &mut IncomingDatagramStream,
    max: u32,
) -> Result<Vec<u8>, wit_datagram_batch::ErrorCode> {
    let max = usize::try_from(max)
        .unwrap_or(usize::MAX)
        .min(DATAGRAM_BATCH);
    let mut packed = Vec::new();
    // Each sender is checked by the stream (the socket policy), as for
    // `wasi:sockets`' `receive`; a datagram is at most 65,535 bytes, so
    // `push` cannot refuse one.
    let taken = stream.receive_each(max, |payload, from| {
        let _ = packed_datagrams::push(&mut packed, payload, from);
    })?;
    if taken == 0 {
        return Err(wit_datagram_batch::ErrorCode::WouldBlock);
    }
    Ok(packed)
}

impl wit_readiness::Host for State {
    fn watch(&mut self, key: u32, socket: Resource<wasmtime_wasi::p2::TcpSocket>) -> bool {
        // The handle is the guest's own socket, borrowed for the call.
        self.watch_handle(key, Handle::Tcp(socket.rep()))
    }

    fn watch_datagrams(&mut self, key: u32, datagrams: Resource<IncomingDatagramStream>) -> bool {
        // The handle is the guest's own stream, borrowed for the call.
        self.watch_handle(key, Handle::Datagrams(datagrams.rep()))
    }

    fn unwatch(&mut self, key: u32) {
        self.watch_set_mut().unwatch(key);
    }

    fn wait(
        &mut self,
        rearm: Vec<u32>,
        quick_acks: Vec<u32>,
        pollables: Vec<Resource<wasmtime_wasi::p2::DynPollable>>,
        deadline: Option<u64>,
    ) -> wasmtime::Result<wit_readiness::Waited> {
        // A wait is a turn of the guest's event loop: its heartbeat (see
        // `watchdog` in the WIT), with no call or timer of its own.
        self.heartbeats += 1;
        for key in rearm {
            self.rearm(key);
        }
        for key in quick_acks {
            self.quick_ack_key(key);
        }
        // The host's clock is read natively (a vDSO call), where the
        // component's read was a host call of its own; only to learn
        // whether the deadline has passed, which the timer's own deadline
        // does not need (it is the component's, on the same clock).
        // A look without waiting keeps its reading: it ends microseconds
        // after it, and that is the reading the wait returns.
        let mut looked = None;
        let until = match deadline {
            None => Until::Never,
            Some(d) => match wasmtime_wasi::HostMonotonicClock::now(&self.clock) {
                now if d <= now => {
                    looked = Some(now);
                    Until::Passed
                }
                _ => self.clock.instant(d).map_or(Until::Never, Until::At),
            },
        };
        // Out of the store's data while it waits, beside the set.
        let mut timer = std::mem::take(&mut self.wait_timer);
        let turn = std::mem::take(&mut self.turn_runtime);
        let ready = if pollables.is_empty() {
            // Only the set: its own future, no `wasi:io/poll`.
            let set = wasmtime_wasi::p2::Pollable::ready(self.watch_set_mut());
            block_on(
                turn,
                timer.within(until, async {
                    set.await;
                    Ok(Vec::new())
                }),
            )
        } else {
            let set = self.watch_set_pollable.rep();
            let mut list = Vec::with_capacity(pollables.len() + 1);
            list.push(Resource::new_borrow(set));
            list.extend(pollables);
            let poll = wasmtime_wasi::p2::bindings::io::poll::Host::poll(&mut self.table, list);
            // The set is index 0; the caller's pollables follow it.
            block_on(turn, timer.within(until, poll))
                .map(|ready| ready.into_iter().filter_map(|i| i.checked_sub(1)).collect())
        };
        self.wait_timer = timer;
        let ready = ready?;
        let now = looked.unwrap_or_else(|| wasmtime_wasi::HostMonotonicClock::now(&self.clock));
        let set = self.watch_set_mut();
        let mut waited = set.take_with(|keys| waited(keys, ready, now));
        let datagrams = reported(&waited).find_map(|key| match set.handle(key) {
            Some(Handle::Datagrams(rep)) => Some((key, rep)),
            _ => None,
        });
        waited.received = datagrams.map(|(key, rep)| self.receive_for(key, rep));
        Ok(waited)
    }
}

/// Runs `wait`'s future on the worker thread's runtime (see [`run`]): the
/// instance runs synchronously on that thread, and its waits turn the
/// runtime, which drives the worker's sockets, timers and tasks.
///
/// A wait that is ready at once returns without turning it, so an instance
/// kept busy (a socket that is never drained) would never see its other
/// sockets become ready; with `turn`, set by each epoch tick, the wait
/// first yields once, and the runtime polls its sockets and runs its tasks
/// (at most ten times a second, as the ticks come).
fn block_on<T>(
    turn: bool,
    wait: impl std::future::Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    ThreadRuntime::block_on(async move {
        if turn {
            tokio::task::yield_now().await;
        }
        wait.await
    })
    .unwrap_or_else(|_| Err(wasmtime::Error::msg("a wait outside a worker thread")))
}

/// `wait`'s result: the first keys inline, lists only when not empty (see
/// `waited` in the WIT for why).
fn waited(keys: &[u32], ready: Vec<u32>, now: u64) -> wit_readiness::Waited {
    let key = |i: usize| keys.get(i).copied().unwrap_or(0);
    wit_readiness::Waited {
        // The set holds one report per watched key, and keys are u32.
        key_count: u32::try_from(keys.len()).unwrap_or(u32::MAX),
        first_keys: (key(0), key(1), key(2), key(3)),
        more_keys: keys
            .get(4..)
            .filter(|more| !more.is_empty())
            .map(<[u32]>::to_vec),
        ready: (!ready.is_empty()).then_some(ready),
        now,
        received: None,
    }
}

/// The keys `waited` reports, in order.
fn reported(waited: &wit_readiness::Waited) -> impl Iterator<Item = u32> + '_ {
    let (k0, k1, k2, k3) = waited.first_keys;
    let inline = usize::try_from(waited.key_count).map_or(4, |n| n.min(4));
    [k0, k1, k2, k3]
        .into_iter()
        .take(inline)
        .chain(waited.more_keys.iter().flatten().copied())
}

impl State {
    /// Watches the guest's socket `handle` under `key`; when it cannot be
    /// watched, nothing is watched under `key` and the caller polls it.
    fn watch_handle(&mut self, key: u32, handle: Handle) -> bool {
        let source = self.source(handle);
        let set = self.watch_set_mut();
        match source {
            Some(source) => set.watch(key, source, handle),
            None => {
                set.unwatch(key);
                false
            }
        }
    }

    /// Watches `key` again through the handle it was last watched through
    /// (`wait`'s `rearm`), or reports it now when that cannot be watched.
    /// The guest promises the handle is still the socket it watched (it
    /// unwatches before it closes one); if it broke that, a `rep` reused
    /// since names another of its own resources, and the lookup either
    /// fails (reported: its read tells) or watches that one.
    fn rearm(&mut self, key: u32) {
        let Some(handle) = self.watch_set_mut().handle(key) else {
            return;
        };
        let source = self.source(handle);
        let set = self.watch_set_mut();
        if !source.is_some_and(|source| set.watch(key, source, handle)) {
            set.report(key, handle);
        }
    }

    /// The receive the guest makes next from the datagram stream `rep`,
    /// which the set just reported under `key` (`waited.received`): as
    /// `datagram-batch.receive` makes it, with the stream's own checks.
    /// The guest promises `rep` is still the stream it watched, as for
    /// `rearm`; a `rep` reused against that names one of its own
    /// resources, which then fails the lookup or is received from.
    fn receive_for(&mut self, key: u32, rep: u32) -> wit_readiness::ReceivedDatagrams {
        let stream = Resource::<IncomingDatagramStream>::new_borrow(rep);
        let datagrams = match self.table.get_mut(&stream) {
            Ok(stream) => receive_packed(stream, u32::MAX),
            Err(_) => Err(wit_datagram_batch::ErrorCode::InvalidState),
        };
        wit_readiness::ReceivedDatagrams { key, datagrams }
    }

    /// Acknowledges what was read from the TCP stream `key` was last
    /// watched through (`wait`'s `quick-acks`), if the set remembers one.
    /// As in `rearm`, a `rep` the guest reused against its promise names
    /// one of its own resources: another of its sockets gets an early ACK,
    /// or the lookup fails and nothing happens.
    fn quick_ack_key(&mut self, key: u32) {
        if let Some(Handle::Tcp(rep)) = self.watch_set_mut().handle(key) {
            wit_tcp_ack::Host::quick_ack(self, Resource::new_borrow(rep));
        }
    }

    /// What the set waits on for the guest's socket `handle`: none when it
    /// is not a socket that can be watched now (see `watch` in the WIT).
    fn source(&self, handle: Handle) -> Option<Source> {
        match handle {
            Handle::Tcp(rep) => {
                let socket = Resource::<wasmtime_wasi::p2::TcpSocket>::new_borrow(rep);
                let socket = self.table.get(&socket).ok()?;
                socket
                    .receive_stream()
                    .map(Source::Stream)
                    .or_else(|| socket.listener().map(Source::Listener))
            }
            Handle::Datagrams(rep) => {
                let datagrams = Resource::<IncomingDatagramStream>::new_borrow(rep);
                self.table
                    .get(&datagrams)
                    .ok()
                    .and_then(IncomingDatagramStream::receive_socket)
                    .map(Source::Datagrams)
            }
        }
    }

    fn watch_set_mut(&mut self) -> &mut crate::readiness::WatchSet {
        self.table
            .get_mut(&self.watch_set)
            .expect("the watch set lives as long as the store")
    }
}

impl wit_metrics::Host for State {
    fn push(&mut self, report: wit_metrics::Report) {
        self.metrics
            .apply(self.worker, report_from_wit(report), Instant::now());
    }
}

fn rcodes_from_wit(r: wit_metrics::Rcodes) -> stats::RcodeCounts {
    let wit_metrics::Rcodes {
        noerror,
        formerr,
        servfail,
        nxdomain,
        notimp,
        refused,
        other,
    } = r;
    // The order of stats::RcodeLabel::ALL.
    stats::RcodeCounts([noerror, formerr, servfail, nxdomain, notimp, refused, other])
}

fn histogram_from_wit(h: wit_metrics::Histogram) -> stats::Histogram {
    let mut out = stats::Histogram {
        sum_us: h.sum_us,
        ..stats::Histogram::default()
    };
    // The component sends exactly one entry per bucket; extra ones (a
    // mismatched build) are dropped rather than trusted.
    for (o, n) in out.buckets.iter_mut().zip(h.buckets) {
        *o = n;
    }
    out
}

/// The component's report as the metrics module adds it up: the inverse of
/// the component's `wit_report`. Every field is destructured, so one added
/// to the WIT must be handled here.
fn report_from_wit(report: wit_metrics::Report) -> stats::Report {
    let wit_metrics::Report {
        udp_answers,
        tcp_answers,
        udp_latency,
        tcp_latency,
        refused_inflight,
        drops:
            wit_metrics::Drops {
                acl,
                malformed,
                too_long,
            },
        truncated,
        inflight,
        tcp_clients,
        upstreams,
        ready,
        cache,
    } = report;
    let (upstreams, gauges) = upstreams
        .into_iter()
        .map(|u| {
            let wit_metrics::Upstream {
                name: upstream,
                configured,
                queries,
                responses,
                rtt,
                failures:
                    wit_metrics::Failures {
                        network,
                        ca,
                        name,
                        pin,
                        timeout,
                        protocol,
                    },
                full_handshakes,
                resumed_handshakes,
                hedges,
                window_probes,
                srtt_us,
                up,
                connections,
                waiting,
                window,
                chain,
                pin_no_backup,
                pin_leaf_only,
            } = u;
            let counted = stats::UpstreamStats {
                name: upstream,
                queries,
                responses: rcodes_from_wit(responses),
                rtt: histogram_from_wit(rtt),
                // The order of stats::Check::ALL.
                failures: [network, ca, name, pin, timeout, protocol],
                handshakes: [full_handshakes, resumed_handshakes],
                hedges,
                window_probes,
                chain: chain.map(|certs| {
                    certs
                        .into_iter()
                        .map(|c| stats::ChainCert {
                            position: c.position,
                            not_after: c.not_after,
                            pinned: c.pinned,
                        })
                        .collect()
                }),
                no_backup: pin_no_backup,
                leaf_only: pin_leaf_only,
            };
            (
                counted,
                stats::UpstreamGauges {
                    configured,
                    up,
                    connections,
                    waiting,
                    window,
                    srtt: srtt_us.map(Duration::from_micros),
                },
            )
        })
        .unzip();
    stats::Report {
        stats: stats::Stats {
            udp_answers: rcodes_from_wit(udp_answers),
            tcp_answers: rcodes_from_wit(tcp_answers),
            udp_latency: histogram_from_wit(udp_latency),
            tcp_latency: histogram_from_wit(tcp_latency),
            refused_inflight,
            // The order of stats::DropReason::ALL.
            drops: [acl, malformed, too_long],
            truncated,
            tcp_clients,
            upstreams,
        },
        inflight,
        upstreams: gauges,
        ready,
        cache: cache_from_wit(cache),
    }
}

fn cache_from_wit(c: wit_metrics::CacheStats) -> CacheReport {
    let wit_metrics::CacheStats {
        hits,
        misses,
        failures,
        stale,
        prefetches,
        inserts,
        evictions,
        entries,
        bytes,
        max_bytes,
    } = c;
    CacheReport {
        counters: CacheCounters {
            hits,
            misses,
            failures,
            stale,
            prefetches,
            inserts,
            evictions,
        },
        entries,
        bytes,
        max_bytes,
    }
}

impl wit_config::Host for State {
    fn get(&mut self) -> wit_config::ProxyConfig {
        let (generation, config) = self.published.current();
        if generation != self.taken {
            // The component serves this generation from now on: grant what
            // it names at the same moment.
            self.policy.update(&config);
            self.taken = generation;
        }
        wit_config(&config.worker_share(self.workers))
    }

    fn generation(&mut self) -> u64 {
        self.published.current().0
    }
}

impl wit_log::Host for State {
    fn emit(&mut self, level: wit_log::Level, message: String, fields: Vec<wit_log::Field>) {
        let mut fields: Vec<(String, String)> =
            fields.into_iter().map(|f| (f.key, f.value)).collect();
        // With several workers, which one said it: each has its own
        // connections, cache and limits.
        if self.workers.get() > 1 {
            fields.push(("worker".to_owned(), self.worker.to_string()));
        }
        crate::logfmt::component_event(level_from_wit(level), &message, &fields);
    }
}

/// The linker for the `proxy` world: WASI (p2) plus our own interfaces.
pub fn linker(engine: &Engine) -> Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    crate::linger::shadow_output_stream_drop(&mut linker)?;
    wit_types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    wit_config::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    wit_log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    wit_metrics::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    wit_watchdog::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    wit_aead::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    wit_tcp_ack::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    wit_tcp_send::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    wit_readiness::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    wit_datagram_batch::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}

fn wit_ip(ip: IpAddr) -> wit_types::IpAddress {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            wit_types::IpAddress::Ipv4((a, b, c, d))
        }
        IpAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.segments();
            wit_types::IpAddress::Ipv6((a, b, c, d, e, f, g, h))
        }
    }
}

fn wit_socket(addr: SocketAddr) -> wit_types::SocketAddress {
    wit_types::SocketAddress {
        ip: wit_ip(addr.ip()),
        port: addr.port(),
    }
}

/// Milliseconds of a validated duration; the config bounds keep every one
/// far below `u32::MAX` ms (49 days).
fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// A validated count as the WIT's `u32`; the config bounds keep every one
/// within it.
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn level_from_wit(level: wit_log::Level) -> Level {
    match level {
        wit_log::Level::Error => Level::Error,
        wit_log::Level::Warn => Level::Warn,
        wit_log::Level::Info => Level::Info,
        wit_log::Level::Debug => Level::Debug,
        wit_log::Level::Trace => Level::Trace,
    }
}

fn wit_level(level: Level) -> wit_log::Level {
    match level {
        Level::Error => wit_log::Level::Error,
        Level::Warn => wit_log::Level::Warn,
        Level::Info => wit_log::Level::Info,
        Level::Debug => wit_log::Level::Debug,
        Level::Trace => wit_log::Level::Trace,
    }
}

/// The configuration as the component receives it: the one place the host
/// writes the WIT `config` record (the component reads it in one place too,
/// `component::from_wit`). Every field is destructured, so a field added to
/// [`ProxyConfig`] must be handled here.
pub fn wit_config(config: &ProxyConfig) -> wit_config::ProxyConfig {
    let ProxyConfig {
        listen,
        allow_networks,
        upstreams,
        query_timeout,
        upstream_timeout,
        tcp_idle_timeout,
        upstream_idle_timeout,
        strategy,
        hedge_percent,
        // The host runs that many instances, each given its share
        // (`ProxyConfig::worker_share`).
        workers: _,
        max_tcp_clients,
        max_inflight,
        max_udp_size,
        client_buffer_budget,
        log_level,
        // The host renders every line itself (`crate::logfmt`).
        log_format: _,
        log_queries,
        // Served by the host (crate::metrics), not granted to the component.
        metrics_listen: _,
        cache,
    } = config;
    let upstreams = upstreams
        .iter()
        .map(|u| {
            let UpstreamConfig {
                name,
                addr,
                auth_name,
                pins,
                ca,
            } = u;
            wit_config::Upstream {
                name: name.clone(),
                address: wit_socket(*addr),
                auth_name: match auth_name {
                    AuthName::Dns(name) => wit_config::AuthName::DnsName(name.clone()),
                    AuthName::Ip(ip) => wit_config::AuthName::IpAddress(wit_ip(*ip)),
                },
                spki_pins: pins.pins().iter().map(|p| p.digest().to_vec()).collect(),
                ca: ca.as_ref().map(|c| wit_config::CaBundle {
                    path: c.path.display().to_string(),
                    pem: c.pem.clone(),
                }),
            }
        })
        .collect();
    wit_config::ProxyConfig {
        listen: listen.iter().map(|&a| wit_socket(a)).collect(),
        allow_networks: allow_networks
            .iter()
            .map(|n| wit_types::IpNetwork {
                address: wit_ip(n.addr()),
                prefix_len: n.prefix_len(),
            })
            .collect(),
        upstreams,
        strategy: match strategy {
            Strategy::Priority => wit_config::Strategy::Priority,
            Strategy::RoundRobin => wit_config::Strategy::RoundRobin,
            Strategy::Fastest => wit_config::Strategy::Fastest,
        },
        // At most 50 (config::defaults::HEDGE_PERCENT).
        hedge_percent: u8::try_from(*hedge_percent).unwrap_or(u8::MAX),
        timeouts: wit_config::Timeouts {
            query_ms: ms(*query_timeout),
            upstream_ms: ms(*upstream_timeout),
            tcp_idle_ms: ms(*tcp_idle_timeout),
            upstream_idle_ms: ms(*upstream_idle_timeout),
        },
        limits: wit_config::Limits {
            max_tcp_clients: count(*max_tcp_clients),
            max_inflight: count(*max_inflight),
            // max_udp_size is at most 4096 (config::defaults::MAX_UDP_SIZE).
            max_udp_size: u16::try_from(*max_udp_size).unwrap_or(u16::MAX),
            client_buffer_budget: count(*client_buffer_budget),
        },
        log_level: wit_level(*log_level),
        log_queries: *log_queries,
        cache: wit_cache(cache),
    }
}

fn wit_cache(c: &CacheSettings) -> wit_config::Cache {
    let CacheSettings {
        max_bytes,
        ttl,
        failure_ttl,
        stale_window,
        prefetch,
    } = c;
    wit_config::Cache {
        max_bytes: u64::try_from(*max_bytes).unwrap_or(u64::MAX),
        min_ttl_s: ttl.min,
        max_ttl_s: ttl.max,
        failure_ttl_ms: ms(*failure_ttl),
        serve_stale_s: u32::try_from(stale_window.as_secs()).unwrap_or(u32::MAX),
        prefetch: *prefetch,
    }
}

/// The memory one instance may use: [`MEMORY_LIMIT`] for everything but
/// the cache, plus the cache's bound (`cache_size_mib`, counted with its
/// overhead; fixed at start, so a reload never outgrows it).
pub fn memory_limit(config: &ProxyConfig) -> usize {
    MEMORY_LIMIT.saturating_add(config.cache.max_bytes)
}

/// The WASI context: sockets per the policy, stderr for panics, and nothing
/// else (no preopened directories, an empty environment, no arguments, name
/// lookup denied).
///
/// With several workers, each binds the listen addresses with SO_REUSEPORT
/// (`shared`); Linux lets only sockets of the same user share a port. One
/// worker binds them without it, so a port another process holds is an
/// error at start, not a silent split of its traffic.
fn wasi_ctx(policy: SocketPolicy, shared: bool, clock: Clock) -> WasiCtx {
    WasiCtx::builder()
        .monotonic_clock(clock)
        .inherit_stderr()
        .allow_tcp(true)
        .allow_udp(true)
        .allow_ip_name_lookup(false)
        .reuse_port(shared)
        // WASI 0.2 cannot ask for it: without it a pipelined query waits for
        // the ACK of the one before (Nagle), and answers to a TCP client too.
        .tcp_nodelay(true)
        // Called per datagram, directly (no future): the decision is made,
        // and a refusal counted, right here.
        .socket_addr_check_sync(move |addr, use_| policy.check(addr, use_))
        .build()
}

/// How an instance stopped.
#[derive(Debug)]
pub enum Outcome {
    /// It returned or called exit with this code.
    Exited(i32),
    /// It trapped (or failed to instantiate) after living `life`.
    Trapped {
        /// The trap.
        error: anyhow::Error,
        /// How far it got.
        life: Life,
    },
}

/// One worker: which it is, of how many, and what it runs under.
struct Worker {
    index: usize,
    count: std::num::NonZeroUsize,
    engine: Engine,
    linker: Arc<Linker<State>>,
    component: Component,
    published: Arc<Published>,
    metrics: Arc<Metrics>,
    policy: SocketPolicy,
}

/// An instance's `readiness` watch set and its pollable (a child of it),
/// in `table` for the life of the store.
fn watch_set(
    table: &mut ResourceTable,
) -> Result<(
    Resource<crate::readiness::WatchSet>,
    Resource<wasmtime_wasi::p2::DynPollable>,
)> {
    let set = table.push(crate::readiness::WatchSet::default())?;
    let borrowed: Resource<crate::readiness::WatchSet> = Resource::new_borrow(set.rep());
    let pollable = wasmtime_wasi::p2::subscribe(table, borrowed)?;
    Ok((set, pollable))
}

/// Runs one instance until it returns or traps.
fn run_once(w: &Worker) -> Outcome {
    let mut table = ResourceTable::new();
    let (watch_set, watch_set_pollable) = match watch_set(&mut table) {
        Ok(set) => set,
        Err(error) => {
            return Outcome::Trapped {
                error,
                life: Life {
                    heartbeats: 0,
                    uptime: Duration::ZERO,
                },
            };
        }
    };
    let clock = Clock {
        origin: Instant::now(),
    };
    let state = State {
        wasi: wasi_ctx(w.policy.clone(), w.count.get() > 1, clock),
        table,
        watch_set,
        watch_set_pollable,
        clock,
        wait_timer: WaitTimer::default(),
        limits: StoreLimitsBuilder::new()
            .memory_size(memory_limit(&w.published.current().1))
            .build(),
        published: w.published.clone(),
        policy: w.policy.clone(),
        worker: w.index,
        workers: w.count,
        taken: 0,
        heartbeats: 0,
        turn_runtime: false,
        metrics: w.metrics.clone(),
    };
    let mut store = Store::new(&w.engine, state);
    store.limiter(|s| &mut s.limits);
    let mut watchdog = Watchdog::default();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(
        move |mut ctx| match watchdog.on_tick(ctx.data().heartbeats) {
            // The instance runs on, synchronously; its next wait, which a loop
            // that turns makes (else the watchdog stops it), lets the worker's
            // runtime turn first (the host side of its sockets, its tasks).
            Verdict::Continue => {
                ctx.data_mut().turn_runtime = true;
                Ok(UpdateDeadline::Continue(1))
            }
            Verdict::Stuck(ticks) => Err(Stuck::new(ticks).into()),
        },
    );
    let started = Instant::now();
    let result = match Proxy::instantiate(&mut store, &w.component, &w.linker) {
        Ok(proxy) => proxy.wasi_cli_run().call_run(&mut store),
        Err(e) => Err(e),
    };
    let error = match result {
        Ok(Ok(())) => return Outcome::Exited(0),
        Ok(Err(())) => return Outcome::Exited(1),
        Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => return Outcome::Exited(exit.0),
            None => anyhow::Error::from(e),
        },
    };
    Outcome::Trapped {
        error,
        life: Life {
            heartbeats: store.data().heartbeats,
            uptime: started.elapsed(),
        },
    }
}

/// Runs one worker's instance, restarting it after a trap (with a log line,
/// never silently; see [`Restarts`] for the backoff). Returns the exit code
/// when the instance exits by itself, or an error when it keeps trapping
/// before it ever served.
fn run_worker(w: Worker) -> Result<i32> {
    let mut restarts = Restarts::default();
    let mut traps = 0u32;
    let code = loop {
        let outcome = run_once(&w);
        w.metrics.instance_stopped(w.index);
        let (error, life) = match outcome {
            Outcome::Exited(code) => break code,
            Outcome::Trapped { error, life } => (error, life),
        };
        traps += 1;
        let stuck = error.downcast_ref::<Stuck>().is_some();
        let what = if stuck {
            "the proxy component was stuck in a loop and was stopped"
        } else {
            "the proxy component trapped"
        };
        // The cause first, on one line; where in the component, when known.
        let cause = error.root_cause().to_string();
        let backtrace = error
            .downcast_ref::<wasmtime::WasmBacktrace>()
            .map(ToString::to_string)
            .unwrap_or_default();
        match restarts.after_trap(life) {
            Next::RestartAfter(delay) => {
                tracing::error!(
                    worker = w.index,
                    error = cause,
                    uptime = ?life.uptime,
                    served = life.served(),
                    traps,
                    restart_in = ?delay,
                    backtrace,
                    "{what}; restarting it"
                );
                // The worker's tasks (a trapped instance's lingering
                // writes) go on meanwhile.
                block_on(false, async {
                    tokio::time::sleep(delay).await;
                    Ok(())
                })?;
                w.metrics.restarted();
            }
            Next::GiveUp => {
                tracing::debug!(worker = w.index, backtrace, "where the component was");
                bail!(
                    "{what} {traps} times in a row before it ever served (a broken build or \
                     configuration?); giving up: {cause}"
                );
            }
        }
    };
    Ok(code)
}

/// The number of workers `config` asks for: `workers`, or one per CPU the
/// process may use (its CPU affinity and cgroup quota, as
/// [`std::thread::available_parallelism`] reads them).
pub fn workers(config: &ProxyConfig) -> std::num::NonZeroUsize {
    config.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().unwrap_or(std::num::NonZeroUsize::MIN)
    })
}

/// Runs `workers` instances of the component, each on its own thread (see
/// the module's notes), until one exits by itself (its code is returned) or
/// keeps trapping before it ever served (an error). The process ends with
/// it: workers serve the same addresses and are alike, so one that cannot
/// run means a build or configuration none of them can serve.
pub async fn run(
    engine: Engine,
    component: Component,
    published: Arc<Published>,
    metrics: Arc<Metrics>,
    workers: std::num::NonZeroUsize,
) -> Result<i32> {
    let linker = Arc::new(linker(&engine)?);
    let _ticker = Ticker::start(engine.clone())?;
    let policies: Vec<SocketPolicy> = (0..workers.get())
        .map(|_| SocketPolicy::from_config(&published.current().1))
        .collect();
    // Reports the tail of a burst of refusals that ended within LOG_EVERY.
    let _flush = AbortOnDrop({
        let policies = policies.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(LOG_EVERY);
            loop {
                every.tick().await;
                for policy in &policies {
                    policy.refusals().flush();
                }
            }
        })
    });
    let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
    for (index, policy) in policies.into_iter().enumerate() {
        let worker = Worker {
            index,
            count: workers,
            engine: engine.clone(),
            linker: linker.clone(),
            component: component.clone(),
            published: published.clone(),
            metrics: metrics.clone(),
            policy,
        };
        let report = Finished {
            index,
            done: done.clone(),
            result: None,
        };
        std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                // The worker's sockets get writable events only while a write
                // of theirs waits (vendor/mio, patch 3): its runtime is
                // single-threaded, as that needs.
                mio::arm_writes_on_demand(true);
                report.with(
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(anyhow::Error::from)
                        .and_then(|rt| on_runtime(Arc::new(rt), worker)),
                );
            })?;
    }
    drop(done);
    match finished.recv().await {
        Some((index, Ok(code))) => {
            if workers.get() > 1 {
                tracing::info!(worker = index, code, "a worker's component exited");
            }
            Ok(code)
        }
        Some((_, Err(e))) => Err(e),
        None => bail!("every worker thread ended without a word"),
    }
}

/// Runs `worker` on this thread, its instances synchronously (no fiber, no
/// task of their own): `runtime` turns only inside their waits (and the
/// blocking WASI calls, through wasmtime-wasi's `in_tokio`), and there it
/// drives the worker's sockets, timers and tasks.
fn on_runtime(runtime: Arc<tokio::runtime::Runtime>, worker: Worker) -> Result<i32> {
    // tokio's context, for what the host calls make (sockets, tasks).
    let _context = runtime.enter();
    let _thread = ThreadRuntime::enter(runtime.clone());
    run_worker(worker)
}

/// Tells [`run`] that a worker thread ended, with its result, or with an
/// error if the thread panicked before it had one.
struct Finished {
    index: usize,
    done: tokio::sync::mpsc::UnboundedSender<(usize, Result<i32>)>,
    result: Option<Result<i32>>,
}

impl Finished {
    /// Sends `result`.
    fn with(mut self, result: Result<i32>) {
        self.result = Some(result);
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        let result = self
            .result
            .take()
            .unwrap_or_else(|| Err(anyhow::anyhow!("worker {} panicked", self.index)));
        // The receiver is gone only when the process is ending.
        let _ = self.done.send((self.index, result));
    }
}

/// A task that ends with the scope that started it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The component's imports, by name (for the allow-list test and `--help`).
pub fn imports(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine;

    /// The engine and the component built into this binary, compiled.
    fn embedded_component() -> (Engine, Component) {
        let engine = engine::engine().expect("engine");
        let wasm = engine::embedded_wasm().expect("the component is embedded (make build-host)");
        let component = Component::new(&engine, wasm).expect("the embedded component compiles");
        (engine, component)
    }

    #[test]
    fn a_wait_result_holds_no_list_unless_it_has_something_to_list() {
        // The usual wake-ups: nothing (a timeout) or a few sockets.
        let none = waited(&[], Vec::new(), 7);
        assert_eq!((none.key_count, none.first_keys), (0, (0, 0, 0, 0)));
        assert_eq!((&none.more_keys, &none.ready, none.now), (&None, &None, 7));
        let two = waited(&[9, 4], Vec::new(), 8);
        assert_eq!((two.key_count, two.first_keys), (2, (9, 4, 0, 0)));
        assert_eq!((&two.more_keys, &two.ready), (&None, &None));
        let four = waited(&[1, 2, 3, 4], vec![0, 2], 9);
        assert_eq!((four.key_count, four.first_keys), (4, (1, 2, 3, 4)));
        assert_eq!((&four.more_keys, &four.ready), (&None, &Some(vec![0, 2])));
        // A burst: the keys past the fourth in the list, in order.
        let six = waited(&[6, 5, 4, 3, 2, 1], Vec::new(), 10);
        assert_eq!((six.key_count, six.first_keys), (6, (6, 5, 4, 3)));
        assert_eq!(six.more_keys, Some(vec![2, 1]));
        // Read back in order, inline and listed alike; no datagrams
        // received until the wait looks for a reported stream.
        for (result, keys) in [
            (&none, &[][..]),
            (&two, &[9, 4]),
            (&four, &[1, 2, 3, 4]),
            (&six, &[6, 5, 4, 3, 2, 1]),
        ] {
            assert_eq!(reported(result).collect::<Vec<_>>(), keys);
            assert!(result.received.is_none());
        }
    }

    /// Every import of the shipped component, versions stripped. A new
    /// import (a new capability the component asks for) changes this
    /// snapshot and so needs a reviewed decision; the host still grants
    /// only what `wasi_ctx` and the socket policy allow.
    #[test]
    fn component_imports_are_allow_listed() {
        let (engine, component) = embedded_component();
        let mut names: Vec<String> = imports(&engine, &component)
            .into_iter()
            .map(|n| n.split('@').next().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        insta::assert_snapshot!(names.join("\n"));
        let allowed = [
            "wasi:cli/",
            "wasi:clocks/",
            "wasi:io/",
            "wasi:random/",
            "wasi:sockets/",
            "wasi:filesystem/",
            "dnsproxy:proxy/",
        ];
        for name in &names {
            assert!(
                allowed.iter().any(|p| name.starts_with(p)),
                "unexpected import {name}"
            );
        }
        assert!(
            !names.iter().any(|n| n.starts_with("wasi:http/")),
            "no HTTP"
        );
    }

    /// Every setting reaches the record, each in its own field: pins as
    /// their raw digests, durations in milliseconds, the bundle with its
    /// path. Distinct values per field, so a swapped or dropped field fails.
    #[test]
    fn wit_record_carries_every_setting() {
        use dnsproxy_core::core::pins::{Pin, PinSet};

        use crate::config::{CaBundle, IpNet};

        let pin = Pin::of_spki(b"an spki");
        let config = ProxyConfig {
            listen: vec![
                "[::1]:5353".parse().unwrap(),
                "127.0.0.1:5353".parse().unwrap(),
            ],
            allow_networks: vec![
                IpNet::new("10.0.0.0".parse().unwrap(), 8).unwrap(),
                IpNet::new("fd00::".parse().unwrap(), 8).unwrap(),
            ],
            upstreams: vec![
                UpstreamConfig {
                    name: "quad9".into(),
                    addr: "9.9.9.9:853".parse().unwrap(),
                    auth_name: AuthName::Dns("dns.quad9.net".into()),
                    pins: PinSet::new(vec![pin]),
                    ca: Some(CaBundle {
                        path: "/etc/dnsproxy/ca.pem".into(),
                        pem: "-----BEGIN CERTIFICATE-----\n".into(),
                    }),
                },
                UpstreamConfig {
                    name: "[2620:fe::fe]:8853".into(),
                    addr: "[2620:fe::fe]:8853".parse().unwrap(),
                    auth_name: AuthName::Ip("2620:fe::fe".parse().unwrap()),
                    pins: PinSet::default(),
                    ca: None,
                },
            ],
            query_timeout: Duration::from_secs(4),
            upstream_timeout: Duration::from_millis(1500),
            tcp_idle_timeout: Duration::from_secs(10),
            upstream_idle_timeout: Duration::from_secs(30),
            strategy: Strategy::Fastest,
            hedge_percent: 7,
            workers: std::num::NonZeroUsize::new(3),
            max_tcp_clients: 300,
            max_inflight: 65536,
            max_udp_size: 1400,
            client_buffer_budget: 1 << 20,
            log_level: Level::Debug,
            log_format: crate::config::LogFormat::Json,
            log_queries: true,
            metrics_listen: Some("127.0.0.1:9153".parse().unwrap()),
            cache: CacheSettings {
                max_bytes: 64 << 20,
                ttl: crate::config::TtlClamp { min: 5, max: 600 },
                failure_ttl: Duration::from_millis(2500),
                stale_window: Duration::from_secs(7200),
                prefetch: false,
            },
        };
        let wit = wit_config(&config);
        assert_eq!(
            (
                wit.cache.max_bytes,
                wit.cache.min_ttl_s,
                wit.cache.max_ttl_s,
                wit.cache.failure_ttl_ms,
                wit.cache.serve_stale_s,
                wit.cache.prefetch
            ),
            (64 << 20, 5, 600, 2500, 7200, false)
        );
        assert_eq!(memory_limit(&config), MEMORY_LIMIT + (64 << 20));
        assert!(matches!(wit.strategy, wit_config::Strategy::Fastest));
        assert_eq!(wit.hedge_percent, 7);
        assert!(matches!(
            wit.listen[..],
            [
                wit_types::SocketAddress {
                    ip: wit_types::IpAddress::Ipv6((0, 0, 0, 0, 0, 0, 0, 1)),
                    port: 5353
                },
                wit_types::SocketAddress {
                    ip: wit_types::IpAddress::Ipv4((127, 0, 0, 1)),
                    port: 5353
                }
            ]
        ));
        let nets: Vec<_> = wit
            .allow_networks
            .iter()
            .map(|n| (&n.address, n.prefix_len))
            .collect();
        assert!(matches!(
            nets[..],
            [
                (wit_types::IpAddress::Ipv4((10, 0, 0, 0)), 8),
                (wit_types::IpAddress::Ipv6((0xfd00, 0, 0, 0, 0, 0, 0, 0)), 8)
            ]
        ));
        let [quad9, second] = &wit.upstreams[..] else {
            panic!("two upstreams, got {}", wit.upstreams.len());
        };
        assert_eq!(quad9.name, "quad9");
        assert!(matches!(
            &quad9.auth_name,
            wit_config::AuthName::DnsName(name) if name == "dns.quad9.net"
        ));
        assert!(matches!(
            quad9.address,
            wit_types::SocketAddress {
                ip: wit_types::IpAddress::Ipv4((9, 9, 9, 9)),
                port: 853
            }
        ));
        assert_eq!(quad9.spki_pins, [pin.digest().to_vec()]);
        let ca = quad9.ca.as_ref().expect("quad9 has a bundle");
        assert_eq!(
            (ca.path.as_str(), ca.pem.as_str()),
            ("/etc/dnsproxy/ca.pem", "-----BEGIN CERTIFICATE-----\n")
        );
        assert!(matches!(
            second.auth_name,
            wit_config::AuthName::IpAddress(wit_types::IpAddress::Ipv6((
                0x2620, 0xfe, 0, 0, 0, 0, 0, 0xfe
            )))
        ));
        assert!(matches!(
            second.address,
            wit_types::SocketAddress {
                ip: wit_types::IpAddress::Ipv6((0x2620, 0xfe, 0, 0, 0, 0, 0, 0xfe)),
                port: 8853
            }
        ));
        assert!(second.spki_pins.is_empty() && second.ca.is_none());
        let t = &wit.timeouts;
        assert_eq!(
            (t.query_ms, t.upstream_ms, t.tcp_idle_ms, t.upstream_idle_ms),
            (4000, 1500, 10_000, 30_000)
        );
        let l = &wit.limits;
        assert_eq!(
            (
                l.max_tcp_clients,
                l.max_inflight,
                l.max_udp_size,
                l.client_buffer_budget
            ),
            (300, 65536, 1400, 1 << 20)
        );
        assert!(matches!(wit.log_level, wit_log::Level::Debug));
        assert!(wit.log_queries);
        assert!(
            !wit_config(&ProxyConfig {
                log_queries: false,
                ..config
            })
            .log_queries
        );
    }

    /// Each level crosses the boundary and comes back (as a log event) as
    /// itself.
    #[test]
    fn log_levels_round_trip_through_the_wit() {
        for level in Level::ALL {
            assert_eq!(level_from_wit(wit_level(level)), level);
        }
    }

    /// The component links against exactly the world the host provides.
    #[test]
    fn embedded_component_instantiates_against_the_proxy_world() {
        let (engine, component) = embedded_component();
        let linker = linker(&engine).expect("linker");
        linker
            .instantiate_pre(&component)
            .expect("every import is provided by the host");
    }
}
