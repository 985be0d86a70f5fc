#!/usr/bin/env bash
# Packaging: cmake --install lays out the files, the unit passes
# systemd-analyze verify, and cpack builds a .deb depending on Debian's
# runtime libraries. Usage: check.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

DESTDIR=$tmp/root cmake --install "$build" --prefix /usr >/dev/null
root=$tmp/root
[ -x "$root/usr/bin/chatd" ] || fail "no /usr/bin/chatd"
[ -x "$root/usr/bin/chatctl" ] || fail "no /usr/bin/chatctl"
"$root/usr/bin/chatctl" --help >/dev/null || fail "chatctl --help"
unit=$(find "$root" -name chatd.service | head -1)
[ -n "$unit" ] || fail "no chatd.service installed"
case "$unit" in */systemd/system/chatd.service) ;; *) fail "unit not in a systemd unit dir: $unit" ;; esac
[ -f "$root/etc/chatd/chatd.toml" ] || fail "no /etc/chatd/chatd.toml"
grep -q '^path = "/var/lib/chatd/chatd.db"' "$root/etc/chatd/chatd.toml" || fail "installed config does not store under /var/lib/chatd"
"$build/chatd" -c "$root/etc/chatd/chatd.toml" --check-config >/dev/null || fail "installed config is invalid"
[ -f "$root/usr/share/doc/chatd/README.md" ] || fail "no docs in share/doc/chatd"
[ -f "$root/usr/share/chatd/prometheus/chatd-rules.yml" ] || fail "no Prometheus rules in share/chatd/prometheus"
[ -f "$root/usr/share/chatd/grafana/chatd-dashboard.json" ] || fail "no Grafana dashboard in share/chatd/grafana"
grep -q '^ExecStart=/usr/bin/chatd -c /etc/chatd/chatd.toml$' "$unit" || fail "ExecStart does not match the install"
grep -q '^Type=notify$' "$unit" || fail "unit is not Type=notify"

# systemd-analyze verify wants the ExecStart binary to exist: point it at the build.
sed "s#^ExecStart=/usr/bin/chatd#ExecStart=$build/chatd#" "$unit" > "$tmp/chatd.service"
if ! out=$(systemd-analyze verify "$tmp/chatd.service" 2>&1); then
  echo "$out" >&2
  fail "systemd-analyze verify"
fi
if echo "$out" | grep -i "chatd.service" | grep -qiv "ignoring\|not found in"; then
  echo "$out" >&2
  fail "systemd-analyze verify reported problems"
fi

# Hardening (issue 17): resource caps and the sandbox are in the unit, and
# systemd's own rating of it stays below 2.0 ("OK"); offline, no PID 1 needed.
for want in '^MemoryHigh=' '^MemoryMax=' '^TasksMax=[0-9]' '^ProtectProc=invisible$' \
            '^ProcSubset=pid$' '^SystemCallFilter=@system-service$' '^SystemCallFilter=~@privileged @resources$' \
            '^NoNewPrivileges=yes$' '^CapabilityBoundingSet=$'; do
  grep -q "$want" "$unit" || fail "unit lacks $want"
done
sec=$(systemd-analyze security --offline=yes "$tmp/chatd.service" 2>&1) || true
score=$(sed -n 's/^.*Overall exposure level for chatd.service: \([0-9.]*\).*$/\1/p' <<<"$sec")
[ -n "$score" ] || { echo "$sec" >&2; fail "systemd-analyze security gave no score"; }
awk -v s="$score" 'BEGIN { exit !(s < 2.0) }' || { echo "$sec" >&2; fail "exposure $score, want < 2.0"; }
echo "systemd-analyze security: exposure $score"

(cd "$build" && cpack -G DEB -B "$tmp/pkg" >/dev/null 2>&1) || fail "cpack -G DEB"
deb=$(ls "$tmp"/pkg/chatd_*.deb)
deps=$(dpkg-deb -f "$deb" Depends)
for lib in libwebsockets libev libcjson libsqlite3 libjwt libsystemd libcurl python3; do
  echo "$deps" | grep -q "$lib" || fail "Depends lacks $lib: $deps"
done
contents=$(dpkg-deb -c "$deb")
grep -q '\./usr/bin/chatd$' <<<"$contents" || fail ".deb lacks /usr/bin/chatd"
grep -q '\./usr/bin/chatctl$' <<<"$contents" || fail ".deb lacks /usr/bin/chatctl"
grep -q 'systemd/system/chatd.service$' <<<"$contents" || fail ".deb lacks the unit"
grep -q '\./usr/share/chatd/prometheus/chatd-rules.yml$' <<<"$contents" || fail ".deb lacks the Prometheus rules"
grep -q '^/etc/chatd/chatd.toml$' <<<"$(dpkg-deb -I "$deb" conffiles)" || fail "config is not a conffile"
echo "packaging: install layout, unit, and $(basename "$deb") OK"
echo "Depends: $deps"
