#!/usr/bin/env bash
# Builds the project image from deploy/Dockerfile with no network inside the build (`make image`).
#
#   deploy/build_image.sh            wheels, base image (if needed), image; prints the image tag
#   deploy/build_image.sh wheels     only the wheels of constraints.txt, into build/wheels
#   deploy/build_image.sh base       only the local base image (debootstrap + this Python)
#
# 1. Wheels: `pip wheel --no-deps -r constraints.txt` on this machine into build/wheels (kept
#    until constraints.txt changes); the Dockerfile installs them with --no-index.
# 2. Base image: BASE_IMAGE when set; else the Dockerfile's public python:3.10.13-slim-bookworm
#    if the engine has it or can pull it; else a local one, made once and kept in the engine:
#    `debootstrap --variant=minbase bookworm` from the Debian mirror apt uses here, with the
#    CPython that PYTHON was made from copied under /usr/local and the Debian libraries it links.
# 3. Registry stages: BEAM_SDK_IMAGE (Beam's SDK boot binary) and TF_SERVING_IMAGE
#    (tensorflow_model_server) default to the public images when the engine has them or can pull
#    them, else to empty, which skips the stage. Set either to '' to skip it, or to a mirror.
# 4. `docker build`, tagged IMAGE (default tfx-image-pipeline:local) and IMAGE_REPO:src-HASH,
#    HASH being a digest of every build input. When that tag exists, nothing is built: a second
#    `make image` with nothing changed takes seconds.
#
# Environment: PYTHON (the project's venv Python, default .venv/bin/python), IMAGE, DOCKER_HOST
# (deploy/container_engine.sh provides one), DEBIAN_MIRROR, BASE_IMAGE, BEAM_SDK_IMAGE,
# TF_SERVING_IMAGE.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
IMAGE=${IMAGE:-tfx-image-pipeline:local}
IMAGE_REPO=${IMAGE%:*}
WHEELS_DIR=build/wheels
WHEELS_STAMP="$WHEELS_DIR/.constraints.sha256"
PUBLIC_BASE_IMAGE=python:3.10.13-slim-bookworm
PULL_TIMEOUT_SECONDS=${PULL_TIMEOUT_SECONDS:-60}
BUILD_LOG=build/image-build.log

say() { echo "build-image: $*" >&2; }
die() { say "error: $*"; exit 1; }

[[ -x "$PYTHON" ]] || die "no Python at PYTHON=$PYTHON: run \`make install\` first (or set PYTHON)"
# The interpreter the venv was made from: its version is the one constraints.txt was frozen on.
PYTHON_PREFIX=$("$PYTHON" -c 'import sys; print(sys.base_prefix)')
PYTHON_VERSION=$("$PYTHON" -c 'import platform; print(platform.python_version())')
PYTHON_MINOR=${PYTHON_VERSION%.*}
BEAM_VERSION=$(sed -n 's/^apache-beam==//p' constraints.txt)
# Debian packages the base gets besides the copied Python's libraries: certificates, network
# and time zone data, and libraries that wheels of constraints.txt link without bundling them
# (tflite-support's metadata extension links libusb-1.0). The tag names the list, so a change
# to it makes a new base.
BASE_EXTRA_PACKAGES="ca-certificates netbase tzdata libusb-1.0-0"
LOCAL_BASE_IMAGE="tfx-image-pipeline-base:python${PYTHON_VERSION}-bookworm-$(echo "$BASE_EXTRA_PACKAGES" | sha256sum | cut -c1-8)"

docker_ok() {
    command -v docker >/dev/null 2>&1 || die "no docker client on PATH (deploy/container_engine.sh installs one)"
    timeout 10 docker info >/dev/null 2>&1 ||
        die "no container engine answers${DOCKER_HOST:+ at DOCKER_HOST=$DOCKER_HOST}: start one with deploy/container_engine.sh start"
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# Whether the engine has image $1 or can pull it within the timeout.
have_or_pull() {
    have_image "$1" && return 0
    say "pulling $1"
    timeout "$PULL_TIMEOUT_SECONDS" docker pull -q "$1" >/dev/null 2>&1
}

build_wheels() {
    local want
    want=$(sha256sum constraints.txt | cut -d' ' -f1)
    if [[ -f "$WHEELS_STAMP" && "$(cat "$WHEELS_STAMP")" == "$want" ]]; then
        say "wheels of constraints.txt are up to date in $WHEELS_DIR"
        return 0
    fi
    say "building the wheels of constraints.txt into $WHEELS_DIR (pip wheel --no-deps)"
    rm -rf "$WHEELS_DIR"
    mkdir -p "$WHEELS_DIR"
    # crcmod, pyfarmhash and kfp 2.5.0 are setup.py-only sdists: --use-pep517 builds them in
    # pip's isolated build environment, whatever the venv holds. They need a C compiler.
    "$PYTHON" -m pip wheel --quiet --no-deps --use-pep517 -r constraints.txt -w "$WHEELS_DIR"
    echo "$want" >"$WHEELS_STAMP"
}

# The Debian mirror apt uses on this machine (DEBIAN_MIRROR overrides it).
debian_mirror() {
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
        echo "$DEBIAN_MIRROR"
        return
    fi
    apt-get indextargets --format '$(SITE) $(RELEASE) $(COMPONENT)' 'Created-By: Packages' 2>/dev/null |
        awk '$2 == "bookworm" && $3 == "main" { print $1; exit }' | grep . ||
        echo http://deb.debian.org/debian
}

# Debian packages holding the shared libraries that the copied Python (outside tkinter) links.
python_runtime_packages() {
    local lib
    find "$PYTHON_PREFIX" -path '*tkinter*' -prune -o -type f \( -name '*.so*' -o -perm -u+x \) -print |
        { xargs ldd 2>/dev/null || true; } | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u |
        grep -v "^$PYTHON_PREFIX" |
        while read -r lib; do
            # Debian 12 merges /lib into /usr/lib; dpkg knows one of the two names.
            dpkg -S "$lib" 2>/dev/null || dpkg -S "${lib#/usr}" 2>/dev/null || dpkg -S "/usr$lib" 2>/dev/null || true
        done | cut -d: -f1 | sort -u
}

build_local_base() {
    if have_image "$LOCAL_BASE_IMAGE"; then
        say "local base image $LOCAL_BASE_IMAGE exists"
        return 0
    fi
    [[ $EUID -eq 0 ]] || die "making the local base image needs root (debootstrap); or set BASE_IMAGE"
    command -v debootstrap >/dev/null 2>&1 || {
        say "installing debootstrap"
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends debootstrap; } >/dev/null ||
            die "apt-get install debootstrap failed; or set BASE_IMAGE"
    }
    [[ "$PYTHON_PREFIX" != /usr && "$PYTHON_PREFIX" != /usr/local ]] ||
        die "PYTHON=$PYTHON comes from $PYTHON_PREFIX, which cannot be copied on its own; use a pyenv or source-built Python 3.10"
    local rootfs mirror packages
    rootfs=$(mktemp -d "${TMPDIR:-/var/tmp}/tfx-image-pipeline-rootfs.XXXXXX")
    # shellcheck disable=SC2064 # the path is fixed now
    trap "rm -rf '$rootfs'" EXIT
    mirror=$(debian_mirror)
    packages=$( (echo "$BASE_EXTRA_PACKAGES"; python_runtime_packages) | tr -s ' \n' ',' | sed 's/,$//')
    say "debootstrap --variant=minbase bookworm from $mirror, with $packages"
    debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" \
        >"$rootfs.log" 2>&1 || { tail -n 20 "$rootfs.log" >&2; die "debootstrap failed (log: $rootfs.log)"; }
    rm -f "$rootfs.log"
    say "copying Python $PYTHON_VERSION from $PYTHON_PREFIX to /usr/local"
    # The standard library without its tests, tkinter and byte code; of site-packages only pip
    # and setuptools (anything else there belongs to this machine, not to the image).
    local site="lib/python$PYTHON_MINOR/site-packages"
    tar -C "$PYTHON_PREFIX" -c \
        --exclude="lib/python$PYTHON_MINOR/test" --exclude='*tkinter*' --exclude=idlelib \
        --exclude=__pycache__ --exclude="$site" --exclude='libpython*.a' \
        bin include lib share | tar -C "$rootfs/usr/local" -x
    mkdir -p "$rootfs/usr/local/$site"
    (cd "$PYTHON_PREFIX/$site" && tar -c --exclude=__pycache__ pip pip-*.dist-info setuptools \
        setuptools-*.dist-info pkg_resources _distutils_hack distutils-precedence.pth) |
        tar -C "$rootfs/usr/local/$site" -x
    # Shebangs, sysconfig data and the build Makefile name the old prefix.
    grep -rlI -- "$PYTHON_PREFIX" "$rootfs/usr/local" | xargs -r sed -i "s|$PYTHON_PREFIX|/usr/local|g"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    chroot "$rootfs" /sbin/ldconfig
    # The modules whose libraries come from Debian, imported in the new root.
    chroot "$rootfs" /usr/local/bin/python3 -c 'import bz2, ctypes, curses, hashlib, lzma, readline, sqlite3, ssl, uuid, zlib' ||
        die "the copied Python does not run in the new root file system (a library missing?)"
    # Byte code once here (the image sets PYTHONDONTWRITEBYTECODE); lib2to3's test data is
    # Python 2 on purpose, as CPython's own `make install` knows.
    chroot "$rootfs" /usr/local/bin/python3 -m compileall -q -j 0 -x 'lib2to3/tests/data' \
        "/usr/local/lib/python$PYTHON_MINOR" >/dev/null
    say "importing $LOCAL_BASE_IMAGE"
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        - "$LOCAL_BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
}

resolve_base_image() {
    if [[ -n "${BASE_IMAGE+set}" ]]; then
        [[ -n "$BASE_IMAGE" ]] || die "BASE_IMAGE is set but empty"
        have_or_pull "$BASE_IMAGE" || die "BASE_IMAGE=$BASE_IMAGE is neither in the engine nor pullable"
        return
    fi
    if have_or_pull "$PUBLIC_BASE_IMAGE"; then
        BASE_IMAGE=$PUBLIC_BASE_IMAGE
    else
        say "$PUBLIC_BASE_IMAGE cannot be pulled: using the local base image $LOCAL_BASE_IMAGE"
        build_local_base
        BASE_IMAGE=$LOCAL_BASE_IMAGE
    fi
}

# Sets variable $1 to image $2 when the engine has it or can pull it, else to '' (stage skipped),
# unless $1 is already set.
resolve_optional_image() {
    local name=$1 default=$2
    if [[ -n "${!name+set}" ]]; then
        [[ -z "${!name}" ]] || have_or_pull "${!name}" || die "$name=${!name} is neither in the engine nor pullable"
        return
    fi
    if have_or_pull "$default"; then
        printf -v "$name" %s "$default"
    else
        say "$default cannot be pulled: its stage is skipped ($name='')"
        printf -v "$name" %s ""
    fi
}

# A docker client that builds with BuildKit (the Dockerfile mounts the wheels): one with the
# buildx plugin, or a client older than 23, which drives the engine's own BuildKit (Debian 12's
# docker.io is 20.10, so the client that deploy/container_engine.sh installs qualifies).
buildkit_client() {
    local client version
    for client in $(type -ap docker) /usr/bin/docker; do
        [[ -x "$client" ]] || continue
        if "$client" buildx version >/dev/null 2>&1; then
            echo "$client"
            return 0
        fi
        version=$("$client" version --format '{{.Client.Version}}' 2>/dev/null || true)
        if [[ -n "$version" && "${version%%.*}" -lt 23 ]]; then
            echo "$client"
            return 0
        fi
    done
    die "no docker client here can build with BuildKit: install the buildx plugin, or Debian's docker.io (its client drives the engine's BuildKit)"
}

# A digest of everything the image is made from: the Dockerfile, the base images' ids and what
# .dockerignore lets into the context (an allowlist of `!PATH` lines), the wheels standing in
# through constraints.txt, which they are built from.
inputs_digest() {
    local image_ids context
    image_ids=$(for image in "$BASE_IMAGE" "$BEAM_SDK_IMAGE" "$TF_SERVING_IMAGE"; do
        [[ -z "$image" ]] || docker image inspect -f '{{.Id}}' "$image"
    done)
    context=$(sed -n 's/^!//p' .dockerignore | grep -vx "$WHEELS_DIR")
    {
        echo "$BASE_IMAGE $BEAM_SDK_IMAGE $TF_SERVING_IMAGE $image_ids"
        # shellcheck disable=SC2086 # one path per line, none with spaces
        find deploy/Dockerfile .dockerignore $context -name __pycache__ -prune -o -type f -print0 |
            sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-16
}

build_image() {
    docker_ok
    build_wheels
    resolve_base_image
    resolve_optional_image BEAM_SDK_IMAGE "apache/beam_python${PYTHON_MINOR}_sdk:$BEAM_VERSION"
    resolve_optional_image TF_SERVING_IMAGE tensorflow/serving:2.16.1
    local digest_tag
    digest_tag="$IMAGE_REPO:src-$(inputs_digest)"
    if have_image "$digest_tag"; then
        say "$digest_tag is up to date"
    else
        say "docker build (base $BASE_IMAGE, Beam SDK stage '${BEAM_SDK_IMAGE}', TF Serving stage '${TF_SERVING_IMAGE}')"
        # --network=none: nothing inside the build may reach a network.
        DOCKER_BUILDKIT=1 "$(buildkit_client)" build --progress=plain --network=none -f deploy/Dockerfile \
            --build-arg "BASE_IMAGE=$BASE_IMAGE" \
            --build-arg "BEAM_SDK_IMAGE=$BEAM_SDK_IMAGE" \
            --build-arg "TF_SERVING_IMAGE=$TF_SERVING_IMAGE" \
            -t "$digest_tag" . >"$BUILD_LOG" 2>&1 || {
            tail -n 30 "$BUILD_LOG" >&2
            die "docker build failed; its log: $BUILD_LOG"
        }
    fi
    docker tag "$digest_tag" "$IMAGE"
    say "$IMAGE = $digest_tag"
    echo "$digest_tag"
}

case "${1:-image}" in
    image) build_image ;;
    wheels) build_wheels ;;
    base) docker_ok; build_local_base ;;
    *) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
