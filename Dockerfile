# dnsproxy as a container image: the static (musl) binary, the ahead-of-time
# compiled component beside it, and the default settings. Nothing else: no
# shell, no libc, no CA files (the web roots are built into the binary).
#
# Build it with `make build`: the build context is the directory the Makefile
# assembles (target/image/), never the repository. Nothing is pulled.
#
# The .cwasm is compiled for the build machine's CPU. On a CPU it does not
# match, dnsproxy compiles the component in memory at start-up (about a
# second) and runs as well; the root file system may stay read-only.
FROM scratch
COPY --chown=0:0 dnsproxy dnsproxy-*.cwasm /
COPY --chown=0:0 settings.ini /etc/dnsproxy/settings.ini
# Any non-root user; Docker lets it bind port 53 inside the container's own
# network namespace (net.ipv4.ip_unprivileged_port_start=0), so no capability
# is needed.
USER 65532:65532
EXPOSE 53/udp 53/tcp
ENTRYPOINT ["/dnsproxy"]
CMD ["--config", "/etc/dnsproxy/settings.ini"]
