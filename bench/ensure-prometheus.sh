#!/bin/sh
# Make sure promtool (Debian's prometheus package) is installed for the tests that check
# docs/alerts.yml (`promtool check rules`, `promtool test rules`), and that no Prometheus
# server is left running afterwards.
# Installs it non-interactively when missing, without the recommended node exporter.
# Needs root for the install (apt-get) and to stop the packaged daemon.
set -eu

found() { command -v promtool >/dev/null 2>&1; }

if found; then
    echo "prometheus: promtool already installed"
else
    if [ "$(id -u)" -ne 0 ]; then
        echo "promtool is missing; run this script as root to install Debian's prometheus package" >&2
        exit 1
    fi
    echo "prometheus: installing Debian's prometheus package (for promtool)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \
        >/dev/null 2>&1 || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        prometheus >/dev/null; }
fi

# The package's postinst starts the server (invoke-rc.d, or systemd) on a machine that
# lets it; the tests need only promtool, so no server may keep running.
if [ "$(id -u)" -eq 0 ] && [ -x /etc/init.d/prometheus ]; then
    invoke-rc.d prometheus stop >/dev/null 2>&1 || /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    echo "prometheus: the packaged server is not running"
fi
if [ "$(id -u)" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl stop prometheus.service >/dev/null 2>&1 || true
fi

if ! found; then
    echo "prometheus: promtool still not found after installing" >&2
    exit 1
fi
