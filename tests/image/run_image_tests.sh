#!/usr/bin/env bash
# The image test: build the Dockerfile with podman on a registry-free Debian base and run the container
# contract tests against the running image (tests/image/, pytest marker `image`).
#
#   bash tests/image/run_image_tests.sh [pytest args...]
#
# On a fresh Debian machine (as root) it installs and configures podman, makes the base image with debootstrap
# (cached as localhost/bookworm-base), builds localhost/sklearn-mme:test, reports build time and image size, then
# runs `pytest tests/image` with MME_IMAGE_TESTS=1. If podman cannot be installed or cannot run a container, the
# image tests are reported as skipped with the reason (the rest of tests/image still runs).
#
# Environment: MME_IMAGE (default localhost/sklearn-mme:test), MME_BASE_IMAGE (default localhost/bookworm-base),
# MME_HOST_CA (default /etc/ssl/certs/ca-certificates.crt: mounted into the build for HTTPS through an
# intercepting proxy; never copied into the image).
# The Debian mirror for the base (debootstrap, and the base's apt sources): DEBIAN_MIRROR and
# DEBIAN_SECURITY_MIRROR, else this machine's own apt configuration (MME_APT_ETC, default /etc/apt: sources.list,
# sources.list.d/*.list and deb822 *.sources). The repository names no mirror; with neither, making the base
# fails with a message saying so. `run_image_tests.sh --print-mirrors` prints what would be used.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

IMAGE=${MME_IMAGE:-localhost/sklearn-mme:test}
BASE=${MME_BASE_IMAGE:-localhost/bookworm-base}
HOST_CA=${MME_HOST_CA:-/etc/ssl/certs/ca-certificates.crt}
APT_ETC=${MME_APT_ETC:-/etc/apt}
t_start=$SECONDS

log() { printf '[image-test] %s\n' "$*" >&2; }

# "URI SUITE" for every enabled binary ('deb') source of this machine, one-line and deb822 formats.
apt_sources() {
    local f
    for f in "$APT_ETC/sources.list" "$APT_ETC"/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        # deb [option=value ...] URI SUITE COMPONENT...
        awk '$1 == "deb" {
                 i = 2
                 if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                 if (i + 1 <= NF) print $i, $(i + 1)
             }' "$f"
    done
    for f in "$APT_ETC"/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk 'function flush(   n, m, i, j, u, s) {
                 if ((" " types " ") ~ / deb / && tolower(enabled) !~ /no/) {
                     n = split(uris, u, " "); m = split(suites, s, " ")
                     for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print u[i], s[j]
                 }
                 types = uris = suites = enabled = key = ""
             }
             function add(k, v) {
                 if (k == "types") types = types " " v
                 else if (k == "uris") uris = uris " " v
                 else if (k == "suites") suites = suites " " v
                 else if (k == "enabled") enabled = enabled v
             }
             /^[[:space:]]*$/ { flush(); next }
             /^#/ { next }
             /^[[:space:]]/ { add(key, $0); next }
             { key = tolower(substr($0, 1, index($0, ":") - 1)); add(key, substr($0, index($0, ":") + 1)) }
             END { flush() }' "$f"
    done
}

# The first http(s)/file URI among this machine's sources whose suite matches the extended regex $1.
apt_uri() {
    apt_sources | awk -v re="$1" '$2 ~ re && $1 ~ /^(https?|file):/ { sub(/\/+$/, "", $1); print $1; exit }'
}

resolve_mirrors() {
    # A Debian archive serves every release, so the host's own release's mirror serves bookworm too.
    MIRROR=${DEBIAN_MIRROR:-$(apt_uri '^(bullseye|bookworm|trixie|forky|sid|oldstable|stable|testing|unstable)$')}
    SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-$(apt_uri '^[a-z]+-security$')}
    if [ -z "$MIRROR" ]; then
        log "no Debian mirror: $APT_ETC has no enabled Debian source (deb ... bookworm, trixie, ...);" \
            "set DEBIAN_MIRROR to your Debian mirror's URL (and DEBIAN_SECURITY_MIRROR for security updates)"
        return 1
    fi
}

if [ "${1:-}" = "--print-mirrors" ]; then
    resolve_mirrors || exit 1
    printf 'DEBIAN_MIRROR=%s\nDEBIAN_SECURITY_MIRROR=%s\n' "$MIRROR" "$SECURITY_MIRROR"
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo -n); fi

skip_reason=""

install_podman() {
    local pkgs=(podman buildah debootstrap fuse-overlayfs slirp4netns uidmap runc catatonit
                containernetworking-plugins iptables)
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || { skip_reason="podman missing and no apt-get to install it"; return 1; }
    log "installing ${missing[*]}"
    local t0=$SECONDS
    if ! "${SUDO[@]}" apt-get update -qq >/dev/null \
        || ! DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null; then
        skip_reason="could not install podman with apt-get (${missing[*]})"
        return 1
    fi
    log "installed in $((SECONDS - t0)) s"
}

configure_podman() {
    # This VM refuses higher ulimits and crun's cgroup mode.
    local conf=/etc/containers/containers.conf
    if [ ! -f "$conf" ]; then
        log "writing $conf (runc, nofile/nproc limits this VM accepts)"
        "${SUDO[@]}" mkdir -p /etc/containers
        printf '%s\n' '[containers]' 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]' '' \
            '[engine]' 'runtime = "runc"' | "${SUDO[@]}" tee "$conf" >/dev/null
    fi
}

make_base() {
    if podman image exists "$BASE"; then
        log "base $BASE exists (cached)"
        return 0
    fi
    resolve_mirrors || exit 1
    log "making $BASE with debootstrap --variant=minbase bookworm ($MIRROR)"
    local t0=$SECONDS rootfs
    rootfs=$(mktemp -d /var/tmp/bookworm-rootfs.XXXXXX)
    "${SUDO[@]}" debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >/dev/null
    # Like debian:bookworm-slim: updates and security sources; no docs, man pages or translations (now or
    # from later installs); no caches or package lists.
    local sources=("deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main")
    if [ -n "$SECURITY_MIRROR" ]; then
        sources+=("deb $SECURITY_MIRROR bookworm-security main")
    else
        log "WARNING: no security mirror (set DEBIAN_SECURITY_MIRROR): the base has no bookworm-security source"
    fi
    printf '%s\n' "${sources[@]}" | "${SUDO[@]}" tee "$rootfs/etc/apt/sources.list" >/dev/null
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/groff/*' 'path-exclude /usr/share/info/*' \
        'path-exclude /usr/share/lintian/*' 'path-exclude /usr/share/linda/*' 'path-exclude /usr/share/locale/*' \
        | "${SUDO[@]}" tee "$rootfs/etc/dpkg/dpkg.cfg.d/docker" >/dev/null
    "${SUDO[@]}" find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    "${SUDO[@]}" rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/var/log/*.log
    "${SUDO[@]}" tar -C "$rootfs" -c . | podman import -q --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
    "${SUDO[@]}" rm -rf "$rootfs"
    log "base made in $((SECONDS - t0)) s"
}

build_image() {
    # The same platform and manifest format as build_and_push.sh uses with podman, so its build is a cache hit.
    local args=(build --platform linux/amd64 --format docker -t "$IMAGE" --build-arg "BASE_IMAGE=$BASE" --network host)
    if [ -f "$HOST_CA" ]; then
        args+=(-v "$HOST_CA:/run/host-ca.crt:ro" --build-arg BUILD_CA_CERT=/run/host-ca.crt)
    fi
    log "podman ${args[*]} ."
    local t0=$SECONDS
    podman "${args[@]}" . >"${TMPDIR:-/tmp}/sklearn-mme-build.log" 2>&1 || {
        tail -n 60 "${TMPDIR:-/tmp}/sklearn-mme-build.log" >&2
        log "BUILD FAILED (full log: ${TMPDIR:-/tmp}/sklearn-mme-build.log)"
        exit 1
    }
    build_seconds=$((SECONDS - t0))
    local bytes
    bytes=$(podman image inspect --format '{{.Size}}' "$IMAGE")
    log "built $IMAGE in ${build_seconds} s; image size $((bytes / 1000000)) MB ($bytes bytes)"
    export MME_IMAGE_BUILD_SECONDS=$build_seconds MME_IMAGE_SIZE_BYTES=$bytes
}

if install_podman; then
    configure_podman
    if ! podman info >/dev/null 2>&1; then
        skip_reason="podman is installed but 'podman info' fails: $(podman info 2>&1 | tail -n 1)"
    fi
fi

# The lint check in test_build_and_push.py runs shellcheck when it is installed (else skips only that check).
if ! command -v shellcheck >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    { "${SUDO[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq shellcheck; } \
        >/dev/null 2>&1 || log "could not install shellcheck (its check will be skipped)"
fi

if [ -z "$skip_reason" ]; then
    make_base
    build_image
    if ! podman run --rm --init --entrypoint /bin/true "$IMAGE" >/dev/null 2>&1; then
        skip_reason="podman cannot run a container here: $(podman run --rm --init --entrypoint /bin/true "$IMAGE" 2>&1 | tail -n 1)"
    fi
fi

if [ -n "$skip_reason" ]; then
    log "image tests will be SKIPPED: $skip_reason"
    export MME_IMAGE_SKIP_REASON="$skip_reason"
fi

PY=python3
[ -x "$repo/.venv/bin/python" ] && PY="$repo/.venv/bin/python"
export MME_IMAGE_TESTS=1 MME_IMAGE="$IMAGE" MME_BASE_IMAGE="$BASE"
log "running pytest tests/image"
t0=$SECONDS
status=0
"$PY" -m pytest -q -p no:cacheprovider tests/image "$@" || status=$?
log "pytest took $((SECONDS - t0)) s; whole image test $((SECONDS - t_start)) s"
exit "$status"
