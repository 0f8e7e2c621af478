#!/usr/bin/env bash
# Idempotent setup for a fresh Debian machine: Java 17 (MMS's frontend), .venv with the project
# and its pinned dependencies. Safe to re-run; does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# Java 17 (MMS's frontend runs on it; javac builds our MMS plugin) and a C compiler (the per-model launcher,
# whose spare mode cold loads and the tests rely on; without one serve falls back to the Python launcher).
packages=()
if ! command -v java >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1; then
    packages+=(openjdk-17-jdk-headless)
fi
if ! command -v cc >/dev/null 2>&1; then
    packages+=(gcc libc6-dev)
fi
if [ ${#packages[@]} -gt 0 ]; then
    echo "[setup] installing ${packages[*]}"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
# Reinstall only when the pins changed since the last install.
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    echo "[setup] installing the project and its pinned dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi
# The MMS plugin and the C launcher, compiled into container/lib (setup.py does the same for a wheel).
mms_jar=$(.venv/bin/python -c 'import mms, pathlib; print(pathlib.Path(mms.__file__).parent / "frontend" / "model-server.jar")')
container/build_native.sh container/lib "$mms_jar"
echo "[setup] ready: .venv/bin/mme-local, container/serve"
