#!/usr/bin/env bash
# Checks `make install` into a scratch DESTDIR (make check-install, part of
# make test):
# - every file lands where the README says, with the modes a root-owned
#   install needs (the component artefact 0644, nothing group/world-writable);
# - a second install keeps a settings.ini that was changed in between;
# - the installed binary finds its precompiled component in
#   $(PREFIX)/lib/dnsproxy and serves without compiling it (no per-user
#   cache to fall back on: HOME and XDG_CACHE_HOME point at an empty dir);
# - `systemd-analyze verify` accepts the installed unit (ExecStart pointed at
#   the DESTDIR copy, since verify checks the binary exists), and prints the
#   unit's `systemd-analyze security` exposure score.
# Needs the binary built (make build-host) and systemd-analyze (Debian's
# systemd package; scripts/setup-test.sh installs it). It works without
# systemd running: verify and security --offline only read files.
#
#   scripts/check-install.sh            (PORT=5550 by default, loopback only)
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${CHECK_INSTALL_PORT:-5550}
PREFIX=/usr
fail() { echo "check-install: FAIL: $*" >&2; exit 1; }
ok() { echo "ok   $*"; }

scratch=$(mktemp -d "${TMPDIR:-/tmp}/dnsproxy-install.XXXXXX")
proxy=""
cleanup() {
    if [ -n "$proxy" ]; then kill "$proxy" 2>/dev/null || true; wait "$proxy" 2>/dev/null || true; fi
    rm -rf "$scratch"
}
trap cleanup EXIT
D=$scratch/root

make --no-print-directory install DESTDIR="$D" PREFIX=$PREFIX >"$scratch/install.log" 2>&1 ||
    { cat "$scratch/install.log" >&2; fail "make install failed"; }

# --- the files --------------------------------------------------------------
for f in usr/bin/dnsproxy etc/dnsproxy/settings.ini usr/lib/systemd/system/dnsproxy.service \
    usr/share/man/man1/dnsproxy.1 usr/share/man/man1/dnsproxy-spki.1 \
    usr/share/bash-completion/completions/dnsproxy \
    usr/share/zsh/site-functions/_dnsproxy usr/share/fish/vendor_completions.d/dnsproxy.fish \
    usr/share/doc/dnsproxy/LICENSE-MIT usr/share/doc/dnsproxy/LICENSE-APACHE; do
    [ -s "$D/$f" ] || fail "missing or empty: /$f"
done
mapfile -t artefacts < <(find "$D/usr/lib/dnsproxy" -name 'dnsproxy-*.cwasm')
[ ${#artefacts[@]} -eq 1 ] || fail "expected one precompiled component in /usr/lib/dnsproxy, found ${#artefacts[@]}"
[ "$(stat -c %a "${artefacts[0]}")" = 644 ] || fail "${artefacts[0]} has mode $(stat -c %a "${artefacts[0]}"), not 644"
[ "$(stat -c %a "$D/usr/bin/dnsproxy")" = 755 ] || fail "/usr/bin/dnsproxy is not 0755"
writable=$(find "$D" -perm /022 ! -type l ! -path "$D" | sed "s|^$D||")
[ -z "$writable" ] || fail "group- or world-writable: $writable"
cmp -s settings.ini "$D/etc/dnsproxy/settings.ini" || fail "/etc/dnsproxy/settings.ini differs from settings.ini"
grep -qx 'ExecStart=/usr/bin/dnsproxy --config /etc/dnsproxy/settings.ini' "$D/usr/lib/systemd/system/dnsproxy.service" ||
    fail "the unit's ExecStart does not run /usr/bin/dnsproxy with /etc/dnsproxy/settings.ini"
grep -q '^\.TH dnsproxy 1' "$D/usr/share/man/man1/dnsproxy.1" || fail "the man page is not dnsproxy(1)"
grep -q -- '--tls-host' "$D/usr/share/bash-completion/completions/dnsproxy" || fail "bash completions lack --tls-host"
ok "files: binary, ${artefacts[0]#"$D"}, settings.ini, unit, man pages, completions, licences"

# --- a second install keeps a changed settings.ini ----------------------------
echo "# changed by check-install" >>"$D/etc/dnsproxy/settings.ini"
cp "$D/etc/dnsproxy/settings.ini" "$scratch/changed.ini"
make --no-print-directory install DESTDIR="$D" PREFIX=$PREFIX >"$scratch/install2.log" 2>&1 ||
    { cat "$scratch/install2.log" >&2; fail "second make install failed"; }
cmp -s "$scratch/changed.ini" "$D/etc/dnsproxy/settings.ini" || fail "the second install overwrote settings.ini"
grep -q "keeping the existing" "$scratch/install2.log" || fail "the second install did not say it kept settings.ini"
ok "a second install keeps the existing settings.ini"

# --- the installed binary uses the installed component ------------------------
mkdir -p "$scratch/home"
log=$scratch/proxy.log
env -i PATH=/usr/bin:/bin HOME="$scratch/home" XDG_CACHE_HOME="$scratch/home/.cache" \
    LOCAL_HOST=127.0.0.1 LOCAL_PORT="$PORT" LOG_LEVEL=debug \
    "$D/usr/bin/dnsproxy" --config "$D/etc/dnsproxy/settings.ini" >"$log" 2>&1 &
proxy=$!
# "serving" (a worker's listeners are bound), not "starting" (logged
# before the workers bind): a probe between the two found nothing
# listening (a CI run of 2026-12-07, 13 ms apart on a loaded machine).
for _ in $(seq 1 100); do
    grep -q "serving" "$log" && break
    kill -0 "$proxy" 2>/dev/null || { cat "$log" >&2; fail "the installed dnsproxy exited"; }
    sleep 0.1
done
grep -q "serving" "$log" || { cat "$log" >&2; fail "the installed dnsproxy did not start within 10 s"; }
"$D/usr/bin/dnsproxy" health --config "$D/etc/dnsproxy/settings.ini" --local-host 127.0.0.1 --local-port "$PORT" ||
    { cat "$log" >&2; fail "the installed dnsproxy does not answer on 127.0.0.1:$PORT"; }
grep -q "loaded precompiled component path=$D/usr/lib/dnsproxy/dnsproxy-" "$log" ||
    { cat "$log" >&2; fail "the installed dnsproxy did not load its component from /usr/lib/dnsproxy"; }
if grep -q "compiled the component\|ignoring the precompiled\|unusable" "$log"; then
    cat "$log" >&2; fail "the installed dnsproxy compiled its component instead of loading it"
fi
[ -z "$(ls -A "$scratch/home")" ] || fail "the installed dnsproxy wrote into HOME: $(ls -A "$scratch/home")"
kill "$proxy"; wait "$proxy" 2>/dev/null || true; proxy=""
ok "the installed binary loads its precompiled component from /usr/lib/dnsproxy and serves"

# --- the systemd unit -----------------------------------------------------------
command -v systemd-analyze >/dev/null || fail "no systemd-analyze (apt-get install systemd; scripts/setup-test.sh)"
unit=$scratch/dnsproxy.service
sed "s|^ExecStart=/usr/bin/|ExecStart=$D/usr/bin/|" "$D/usr/lib/systemd/system/dnsproxy.service" >"$unit"
# verify also checks that Documentation=man:dnsproxy(1) exists: the installed page.
MANPATH="$D/usr/share/man" systemd-analyze verify "$unit" >"$scratch/verify.log" 2>&1 ||
    { cat "$scratch/verify.log" >&2; fail "systemd-analyze verify rejects the unit"; }
[ ! -s "$scratch/verify.log" ] || { cat "$scratch/verify.log" >&2; fail "systemd-analyze verify warns about the unit"; }
grep -q '^MemoryDenyWriteExecute' "$unit" && fail "MemoryDenyWriteExecute breaks wasmtime (its compiled code is executable memory)"
score=$(systemd-analyze security --offline=yes --no-pager "$unit" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || fail "systemd-analyze security printed no score"
awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || fail "systemd-analyze security exposure $score, above 2.0"
ok "systemd-analyze verify accepts the unit; security exposure $score (of 10, lower is better)"
echo "check-install: passed"
