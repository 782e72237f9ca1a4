//! The Docker Engine, for what testcontainers does not do: checking the engine is
//! there, building and importing the harness's images, pausing containers and
//! user-defined networks. Everything goes through the `docker` CLI.
//!
//! Every image, container and network the harness creates carries the label
//! [`LABEL`], so `make spec` can remove leftovers of an interrupted run.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The label on everything the harness creates (`dnsproxy-spec=1`).
pub const LABEL: &str = "dnsproxy-spec";

/// Runs `docker ARGS` and returns its stdout, or an error with its stderr.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `docker`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "`docker {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Panics with one line unless a Docker Engine answers. Checked once per process.
pub fn require() {
    static CHECK: OnceLock<Result<String, String>> = OnceLock::new();
    let check = CHECK.get_or_init(|| docker(&["version", "--format", "{{.Server.Version}}"]));
    if let Err(e) = check {
        panic!(
            "the spec-tests harness needs a running Docker Engine (its resolvers run in \
             containers): {}",
            e.lines().next().unwrap_or_default()
        );
    }
}

/// A `with_host_config_modifier` that publishes every mapped port on 127.0.0.1
/// only: nothing outside this machine reaches the test containers.
pub fn publish_on_loopback(hc: &mut testcontainers::bollard::models::HostConfig) {
    if let Some(bindings) = hc.port_bindings.as_mut() {
        for binding in bindings.values_mut().flatten().flatten() {
            binding.host_ip = Some(std::net::Ipv4Addr::LOCALHOST.to_string());
        }
    }
}

/// Whether an image with this reference exists locally.
pub fn image_exists(reference: &str) -> bool {
    docker(&["image", "inspect", "--format", "{{.Id}}", reference]).is_ok()
}

/// Freezes every process of a container (`docker pause`): a hung peer whose
/// sockets stay open.
pub fn pause(id: &str) {
    docker(&["pause", id]).unwrap_or_else(|e| panic!("{e}"));
}

/// Thaws a paused container.
pub fn unpause(id: &str) {
    docker(&["unpause", id]).unwrap_or_else(|e| panic!("{e}"));
}

/// The IPv4 address of a container on a network.
pub fn container_ip(id: &str, network: &str) -> String {
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    let ip = docker(&["inspect", "--format", &format, id]).unwrap_or_else(|e| panic!("{e}"));
    assert!(!ip.is_empty(), "container {id} has no address on {network}");
    ip
}

/// A user-defined bridge network, removed on drop.
#[derive(Debug)]
pub struct Network {
    name: String,
}

impl Network {
    /// Creates a network with a name unique to this process.
    pub fn new(purpose: &str) -> Self {
        require();
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("dnsproxy-spec-{purpose}-{}-{n}", std::process::id());
        docker(&["network", "create", "--label", &format!("{LABEL}=1"), &name])
            .unwrap_or_else(|e| panic!("{e}"));
        Self { name }
    }

    /// Its name, for `with_network`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Containers are removed first (they are dropped before the network in
        // every test); a failure here leaves a labelled network for `make spec`.
        let _ = docker(&["network", "rm", &self.name]);
    }
}
