#!/bin/sh
# Install the system packages taskloom's tests need, where the machine allows it.
#
# Idempotent and never fatal: every step that cannot run says why and the script still
# exits 0, so CI on a machine without apt or root keeps going (the sandbox tests then
# skip with the reason). Called by .ci/run.
#
#   bubblewrap  - the `bwrap` binary used by the taskloom-sandbox plugin to isolate code.

set -u

log() { printf 'install-system-deps: %s\n' "$*"; }

install_bubblewrap() {
    if command -v bwrap >/dev/null 2>&1; then
        log "bwrap already installed: $(command -v bwrap) ($(bwrap --version 2>/dev/null || echo 'version unknown'))"
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "bwrap is missing and apt-get is not available; install the 'bubblewrap' package by hand (sandbox tests will skip)"
        return 0
    fi
    if [ "$(id -u)" != "0" ]; then
        log "bwrap is missing and this script is not running as root; run 'sudo apt-get install bubblewrap' (sandbox tests will skip)"
        return 0
    fi
    log "installing bubblewrap with apt-get"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bubblewrap >/dev/null 2>&1; then
        log "apt-get install failed; refreshing the package lists and trying again"
        if ! apt-get update >/dev/null 2>&1; then
            log "apt-get update failed (no network or no mirror?); bubblewrap not installed (sandbox tests will skip)"
            return 0
        fi
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bubblewrap >/dev/null 2>&1; then
            log "apt-get install bubblewrap failed; bubblewrap not installed (sandbox tests will skip)"
            return 0
        fi
    fi
    if command -v bwrap >/dev/null 2>&1; then
        log "installed $(bwrap --version 2>/dev/null || echo bwrap)"
    else
        log "apt-get reported success but bwrap is still not on PATH"
    fi
    return 0
}

install_bubblewrap
exit 0
