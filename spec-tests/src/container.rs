//! One resolver container (testcontainers, blocking API) serving DoT on its port 853,
//! published on a fixed `127.0.0.1` port so a stop and start keeps the address the
//! proxy was configured with.
//!
//! On drop the container is removed; if the test is failing (panicking), its logs are
//! printed first, so a failure shows what the resolver saw.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use testcontainers::core::{ContainerPort, WaitFor};
use testcontainers::runners::SyncRunner;
use testcontainers::{Container, ContainerRequest, CopyTargetOptions, GenericImage, ImageExt};

use crate::docker::{self, LABEL};
use crate::paths::free_port;
use crate::process::wait_until;

/// The DoT port inside every resolver container.
pub(crate) const DOT_PORT: u16 = 853;
/// How long a resolver may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What the tests need of a DoT resolver, whichever one it is.
pub trait Resolver {
    /// The DoT address the proxy on this host is given (`127.0.0.1:<port>`).
    fn addr(&self) -> SocketAddr;
    /// Everything it printed so far (across restarts).
    fn log(&self) -> String;
    /// Stops its container: a dead upstream (connections refused).
    fn stop(&mut self);
    /// Starts it again on the same address.
    fn start_again(&mut self);
    /// Freezes it: a hung upstream (connections stay open, nothing answers).
    fn pause(&self);
    /// Thaws it.
    fn unpause(&self);
}

/// Implements [`Resolver`] for a type with an `inner: ResolverContainer` field.
macro_rules! impl_resolver {
    ($t:ty) => {
        impl $crate::container::Resolver for $t {
            fn addr(&self) -> std::net::SocketAddr {
                self.inner.addr()
            }
            fn log(&self) -> String {
                self.inner.logs()
            }
            fn stop(&mut self) {
                self.inner.stop();
            }
            fn start_again(&mut self) {
                self.inner.start_again();
            }
            fn pause(&self) {
                self.inner.pause();
            }
            fn unpause(&self) {
                self.inner.unpause();
            }
        }
    };
}
pub(crate) use impl_resolver;

/// What to start.
#[derive(Debug)]
pub(crate) struct Spec {
    /// Image reference (`name:tag`).
    pub(crate) image: &'static str,
    /// Arguments after the image's entrypoint.
    pub(crate) cmd: Vec<String>,
    /// Files to place in the container before it starts: path, contents.
    pub(crate) files: Vec<(String, Vec<u8>)>,
    /// The log line (stdout or stderr) that says it serves.
    pub(crate) ready_line: &'static str,
    /// A user-defined network to join, besides publishing the port.
    pub(crate) network: Option<String>,
    /// What to call it in messages (`unbound`, `dot-fixture`).
    pub(crate) what: &'static str,
    /// Also publish UDP on the same port (plain DNS, where the resolver serves it).
    pub(crate) udp: bool,
}

/// A running (or stopped, or paused) resolver container.
pub(crate) struct ResolverContainer {
    container: Container<GenericImage>,
    port: u16,
    spec_what: &'static str,
    ready_line: &'static str,
    network: Option<String>,
}

impl ResolverContainer {
    /// Starts the container and waits for its ready line. Panics with its logs if it
    /// does not start.
    pub(crate) fn start(spec: Spec) -> Self {
        docker::require();
        // The host port is picked before Docker binds it; if another process takes it
        // in between, Docker says so and the container is started on a new port.
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let port = free_port();
            match Self::request(&spec, port).start() {
                Ok(container) => {
                    return Self {
                        container,
                        port,
                        spec_what: spec.what,
                        ready_line: spec.ready_line,
                        network: spec.network,
                    };
                }
                Err(e) if attempt < ATTEMPTS && port_taken(&e.to_string()) => continue,
                Err(e) => panic!(
                    "{} ({}) did not start: {e}\n(containers labelled {LABEL} are removed by \
                     `make spec`; `docker logs` of a leftover one may tell more)",
                    spec.what, spec.image
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The container request for `spec`, its DoT port published on `127.0.0.1:port`.
    fn request(spec: &Spec, port: u16) -> ContainerRequest<GenericImage> {
        let (name, tag) = spec
            .image
            .split_once(':')
            .expect("image references are name:tag");
        let image = GenericImage::new(name, tag)
            .with_exposed_port(ContainerPort::Tcp(DOT_PORT))
            .with_wait_for(WaitFor::message_on_either_std(spec.ready_line));
        let mut req = image
            .with_cmd(spec.cmd.clone())
            .with_label(LABEL, "1")
            .with_mapped_port(port, ContainerPort::Tcp(DOT_PORT))
            .with_startup_timeout(START_TIMEOUT)
            .with_host_config_modifier(docker::publish_on_loopback);
        for (path, bytes) in &spec.files {
            req = req.with_copy_to(
                CopyTargetOptions::new(path.clone()).with_mode(0o644),
                bytes.clone(),
            );
        }
        if spec.udp {
            req = req.with_mapped_port(port, ContainerPort::Udp(DOT_PORT));
        }
        if let Some(net) = &spec.network {
            req = req.with_network(net.clone());
        }
        req
    }

    /// `127.0.0.1:<published port>`: where the proxy on this host reaches it.
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The container ID.
    pub(crate) fn id(&self) -> &str {
        self.container.id()
    }

    /// Its address on the user-defined network it joined (containers reach it there).
    pub(crate) fn network_addr(&self) -> Option<SocketAddr> {
        let net = self.network.as_deref()?;
        let ip: Ipv4Addr = docker::container_ip(self.id(), net)
            .parse()
            .expect("docker inspect gives an IPv4 address");
        Some(SocketAddr::from((ip, DOT_PORT)))
    }

    /// Everything it printed, stdout then stderr.
    pub(crate) fn logs(&self) -> String {
        let mut out = self.container.stdout_to_vec().unwrap_or_default();
        out.extend(self.container.stderr_to_vec().unwrap_or_default());
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Stops it (SIGTERM, then SIGKILL after 2 s): a dead upstream.
    pub(crate) fn stop(&self) {
        self.container
            .stop_with_timeout(Some(2))
            .unwrap_or_else(|e| panic!("stopping {}: {e}", self.spec_what));
    }

    /// Starts it again after [`ResolverContainer::stop`], on the same host port, and
    /// waits for a new ready line.
    pub(crate) fn start_again(&self) {
        let before = self.logs().matches(self.ready_line).count();
        self.container
            .start()
            .unwrap_or_else(|e| panic!("restarting {}: {e}", self.spec_what));
        let ready = wait_until(START_TIMEOUT, || {
            self.logs().matches(self.ready_line).count() > before
        });
        assert!(
            ready,
            "{} did not serve again within {START_TIMEOUT:?}; logs:\n{}",
            self.spec_what,
            self.logs()
        );
    }

    /// Freezes it: connections stay open, nothing answers (a hung upstream).
    pub(crate) fn pause(&self) {
        docker::pause(self.id());
    }

    /// Thaws it.
    pub(crate) fn unpause(&self) {
        docker::unpause(self.id());
    }
}

impl Drop for ResolverContainer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A paused container cannot be read from or stopped cleanly.
            let _ = docker::docker(&["unpause", self.container.id()]);
            eprintln!(
                "----- {} container {} ({}) logs -----\n{}\n----- end of {} logs -----",
                self.spec_what,
                self.id(),
                self.addr(),
                self.logs(),
                self.spec_what
            );
        }
    }
}

/// Whether Docker's error says the host port was taken meanwhile.
fn port_taken(error: &str) -> bool {
    let error = error.to_lowercase();
    error.contains("port is already allocated") || error.contains("address already in use")
}
