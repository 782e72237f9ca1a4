//! The conformance suite: the real `dnsproxy` binary (and the real image)
//! against DNS-over-TLS resolvers in containers. One test binary with one
//! module per group: the groups share one build and link (22 binaries took
//! most of the suite's build time). `make spec` runs the groups one after
//! another, each in its own process (`spec -- GROUP::`), as separate binaries
//! did: a group's tests run in parallel with each other only, so what one
//! group loads the machine with never lands on another's timing.

mod acks;
mod bad_clients;
mod cache;
mod concurrency;
mod config_check;
mod container_image;
mod end_to_end;
mod faults;
mod fixtures_smoke;
mod framing;
mod health;
mod hostile;
mod keepalive;
mod leaks;
mod metrics;
mod pinning;
mod query_log;
mod reload;
mod sandbox_limits;
mod snapshots_readable;
mod strategies;
mod top;
mod workers;
