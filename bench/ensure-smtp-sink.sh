#!/bin/sh
# Make sure Postfix's smtp-sink (the benchmark's receiving server) is installed,
# and that the Postfix mail daemon itself is NOT running afterwards.
# Installs Debian's postfix package non-interactively when smtp-sink is missing.
# Needs root for the install (apt-get) and for `postfix stop`.
set -eu

if command -v smtp-sink >/dev/null 2>&1 || [ -x /usr/sbin/smtp-sink ]; then
    echo "smtp-sink: already installed"
else
    if [ "$(id -u)" -ne 0 ]; then
        echo "smtp-sink is missing; run this script as root to install Debian's postfix package" >&2
        exit 1
    fi
    echo "smtp-sink: installing Debian's postfix package"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix
fi

# The benchmark needs only the smtp-sink program, never the mail daemon.
if [ "$(id -u)" -eq 0 ] && command -v postfix >/dev/null 2>&1; then
    postfix stop 2>/dev/null || true
fi

if ! command -v smtp-sink >/dev/null 2>&1 && [ ! -x /usr/sbin/smtp-sink ]; then
    echo "smtp-sink: still not found after installing postfix" >&2
    exit 1
fi
