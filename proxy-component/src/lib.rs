//! The dnsproxy data path.
//!
//! - [`core`]: the sans-IO core (framing, ID mapping, truncation, padding,
//!   pin matching, upstream selection, access control). Pure functions and
//!   state machines over bytes and an injected clock, tested natively.
//! - [`shell`]: the async I/O shell (tokio + rustls) that moves bytes between
//!   sockets and the core. It runs inside the WASI 0.2 component and natively
//!   (for tests and the wasm-overhead benchmark).

pub mod core;
pub mod shell;
