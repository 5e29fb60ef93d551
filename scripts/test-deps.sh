#!/usr/bin/env bash
# Install the real system parts the test suite runs against (Debian 12).
#
# Idempotent and quiet when everything is present. Installs nothing it does
# not need, and starts nothing: the pytest fixtures in tests/infra start (and
# stop, by pid) the Docker engines, PostgreSQL and sshd they use.
#
#   scripts/test-deps.sh          # as root: install what is missing
#   scripts/test-deps.sh --check  # only report; exit 1 if something is missing
set -euo pipefail

check_only=0
if [[ "${1:-}" == "--check" ]]; then
    check_only=1
fi

missing_pkgs=()
missing_what=()

need() { # need PACKAGE DESCRIPTION TEST-COMMAND...
    local pkg=$1 what=$2
    shift 2
    if ! "$@" >/dev/null 2>&1; then
        missing_what+=("$what")
        local p
        for p in "${missing_pkgs[@]+"${missing_pkgs[@]}"}"; do
            [[ "$p" == "$pkg" ]] && return 0
        done
        missing_pkgs+=("$pkg")
    fi
}

have_exe() { [[ -x "$1" ]]; }
have_cmd() { command -v "$1"; }
have_initdb() { compgen -G '/usr/lib/postgresql/*/bin/initdb'; }
have_static_busybox() {
    [[ -x /bin/busybox ]] || return 1
    # A dynamically linked busybox would not run inside an empty rootfs.
    if command -v file >/dev/null 2>&1; then
        file -L /bin/busybox | grep -q 'statically linked'
    else
        ! ldd /bin/busybox 2>/dev/null | grep -q '=>'
    fi
}

need docker.io        "dockerd"                     have_cmd dockerd
need docker.io        "containerd"                  have_cmd containerd
need docker.io        "docker (CLI)"                have_cmd docker
need iptables         "iptables"                    have_cmd iptables
need busybox-static   "/bin/busybox (static)"       have_static_busybox
need openssh-server   "/usr/sbin/sshd"              have_exe /usr/sbin/sshd
need openssh-client   "ssh-keygen"                  have_cmd ssh-keygen
need postgresql       "PostgreSQL server (initdb)"  have_initdb
need chromium         "/usr/bin/chromium"           have_exe /usr/bin/chromium
need iproute2         "ip (iproute2)"               have_cmd ip
need util-linux       "nsenter"                     have_cmd nsenter
need util-linux       "runuser"                     have_cmd runuser
need ca-certificates  "CA certificates"             test -s /etc/ssl/certs/ca-certificates.crt
need tar              "tar"                         have_cmd tar
need debootstrap      "debootstrap (Debian test image)" have_exe /usr/sbin/debootstrap
need git              "git, git-http-backend"       have_exe /usr/lib/git-core/git-http-backend
need docker-registry  "docker-registry (image pulls with auth)" have_exe /usr/bin/docker-registry

if [[ ${#missing_pkgs[@]} -eq 0 ]]; then
    exit 0
fi

echo "test-deps: missing: ${missing_what[*]}" >&2
if [[ $check_only -eq 1 ]]; then
    echo "test-deps: packages to install: ${missing_pkgs[*]}" >&2
    exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "test-deps: not root; run as root (or: sudo $0) to install: ${missing_pkgs[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Do not let package install scripts start services (dockerd, postgresql,
# sshd): the tests start their own private instances.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    created_policy=1
fi
cleanup() { if [[ $created_policy -eq 1 ]]; then rm -f "$policy"; fi; }
trap cleanup EXIT

echo "test-deps: installing: ${missing_pkgs[*]}" >&2
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null

# Re-check: fail loudly if the install did not provide what is needed.
bash "$0" --check
