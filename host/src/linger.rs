//! Closing a connection never blocks the component.
//!
//! wasmtime-wasi 48 implements `[resource-drop]output-stream` by waiting
//! until the stream's last write has reached the OS (`TcpWriter::cancel`,
//! which keeps bytes the guest believes written from being lost; wasi-io
//! PR #79 documents it as the behaviour of the time). The component is one
//! event loop on one thread: while that drop waits, nothing else in it runs.
//! A TCP client that stops reading keeps a write pending forever, so when the
//! proxy closes it (write progress, idle timeout, eviction) the whole proxy
//! would stop until that client reads or goes away: one non-reading client
//! would be a switch that turns the proxy off.
//!
//! [`shadow_output_stream_drop`] replaces that destructor. The stream leaves
//! the component's resource table at once, and a host task gives its pending
//! write up to [`LINGER`] to finish, so a normal close still delivers the last
//! answers, before dropping it: that aborts the write and closes the socket
//! (the client sees a reset if it left bytes unread). At most
//! [`MAX_LINGERING`] streams linger at a time; past that a stream is dropped
//! at once, so closing cannot be turned into unbounded host memory (each
//! lingering stream holds at most one write: 64 KiB as wasmtime-wasi allows,
//! 16 KiB as the component writes).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::p2::DynOutputStream;

/// The interface whose `output-stream` destructor is replaced: the version
/// wasmtime-wasi links (its `wit/deps/io.wit`). Checked in
/// [`shadow_output_stream_drop`]: a name that no longer matches is an error,
/// not a silent no-op.
const STREAMS: &str = "wasi:io/streams@0.2.12";

/// How long a closed stream's pending write may take to finish.
pub const LINGER: Duration = Duration::from_secs(2);

/// Streams lingering at once; beyond it they are dropped at once.
pub const MAX_LINGERING: usize = 1024;

/// Replaces wasmtime-wasi's `output-stream` destructor in `linker` (which
/// must already hold the WASI interfaces) with one that never waits.
pub fn shadow_output_stream_drop<T: WasiView + Send + 'static>(
    linker: &mut Linker<T>,
) -> Result<()> {
    let lingering = Arc::new(AtomicUsize::new(0));
    // Defined once without shadowing: success would mean wasmtime-wasi no
    // longer links this name, and the replacement would go unused.
    linker.allow_shadowing(false);
    let fresh = define(linker, lingering.clone());
    linker.allow_shadowing(true);
    if fresh.is_ok() {
        bail!("{STREAMS} is not linked by wasmtime-wasi: update STREAMS in linger.rs");
    }
    let replaced = define(linker, lingering);
    linker.allow_shadowing(false);
    Ok(replaced?)
}

fn define<T: WasiView + Send + 'static>(
    linker: &mut Linker<T>,
    lingering: Arc<AtomicUsize>,
) -> wasmtime::Result<()> {
    linker.instance(STREAMS)?.resource(
        "output-stream",
        ResourceType::host::<DynOutputStream>(),
        move |mut store: StoreContextMut<'_, T>, rep: u32| -> wasmtime::Result<()> {
            let stream = store
                .data_mut()
                .ctx()
                .table
                .delete(Resource::<DynOutputStream>::new_own(rep))?;
            linger(stream, lingering.clone());
            Ok(())
        },
    )
}

/// Lets `stream` finish its pending write for up to [`LINGER`] in a host
/// task, then drops it; drops it at once past [`MAX_LINGERING`] or outside
/// a runtime.
fn linger(mut stream: DynOutputStream, lingering: Arc<AtomicUsize>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if lingering.fetch_add(1, Ordering::Relaxed) >= MAX_LINGERING {
        lingering.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!("{MAX_LINGERING} streams lingering: a closed stream is dropped at once");
        return;
    }
    runtime.spawn(async move {
        if tokio::time::timeout(LINGER, stream.cancel()).await.is_err() {
            tracing::debug!(
                "a closed connection's last write made no progress for {LINGER:?}: cut"
            );
        }
        drop(stream);
        lingering.fetch_sub(1, Ordering::Relaxed);
    });
}

#[cfg(test)]
mod tests {
    use wasmtime::component::Linker;

    use super::*;
    use crate::sandbox::State;

    #[test]
    fn the_destructor_replaced_is_the_one_wasmtime_wasi_links() {
        let engine = crate::engine::engine().expect("engine");
        let mut linker: Linker<State> = Linker::new(&engine);
        // Without WASI linked there is nothing to replace: refused.
        assert!(shadow_output_stream_drop(&mut linker).is_err());
        let mut linker: Linker<State> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("wasi");
        shadow_output_stream_drop(&mut linker).expect("replaced");
    }
}
