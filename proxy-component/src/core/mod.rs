//! The sans-IO wire core: pure functions and state machines over DNS bytes.
//!
//! Nothing here touches a socket, a clock or a runtime; the async shell moves
//! bytes in and out and asks these modules what to do with them.

pub mod acks;
pub mod acl;
pub mod admission;
pub mod attempt;
pub mod cache;
pub mod client_conn;
pub mod connect;
pub mod duration;
pub mod fair_queue;
pub mod framing;
pub mod inflight;
pub mod message;
pub mod pins;
pub mod spread;
pub mod stats;
pub mod upstream_conn;
pub mod upstreams;
pub mod validity;
pub mod window;
