#!/bin/sh
# Make sure Dovecot's IMAP server (Debian's dovecot-imapd) is installed for the tests that
# start a throwaway server of their own (tests/dovecot.py), and that no packaged Dovecot
# daemon is left running afterwards.
# Installs it non-interactively when missing. Needs root for the install (apt-get) and to
# stop the packaged daemon.
set -eu

found() { [ -x /usr/sbin/dovecot ] && [ -x /usr/lib/dovecot/imap ]; }

if found; then
    echo "dovecot: already installed"
else
    if [ "$(id -u)" -ne 0 ]; then
        echo "Dovecot is missing; run this script as root to install Debian's dovecot-imapd package" >&2
        exit 1
    fi
    echo "dovecot: installing Debian's dovecot-imapd package"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends dovecot-imapd \
        >/dev/null 2>&1 || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        dovecot-imapd >/dev/null; }
fi

# The tests start their own servers; the package's daemon (started by its install on a
# machine with an init system) must not keep running.
if [ "$(id -u)" -eq 0 ] && found && [ -f /etc/dovecot/dovecot.conf ]; then
    if doveadm -c /etc/dovecot/dovecot.conf stop >/dev/null 2>&1; then
        echo "dovecot: stopped the packaged daemon"
    fi
fi

if ! found; then
    echo "dovecot: /usr/sbin/dovecot or its imap program still not found after installing" >&2
    exit 1
fi
