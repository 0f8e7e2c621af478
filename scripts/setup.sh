#!/usr/bin/env bash
# Idempotent setup for a fresh Debian machine: Java 17 (MMS's frontend), .venv with the project
# and its pinned dependencies. Safe to re-run; does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v java >/dev/null 2>&1; then
    echo "[setup] installing Java 17 headless runtime (MMS's frontend needs it)"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openjdk-17-jre-headless >/dev/null
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
# The per-model launcher in C (~0.2 MB per loaded model instead of ~4.5 MB for the Python one).
if [ ! -x container/bin/mme-launcher ] || [ container/launcher.c -nt container/bin/mme-launcher ]; then
    if command -v cc >/dev/null 2>&1; then
        mkdir -p container/bin
        cc -O2 -Wall -Wextra -o container/bin/mme-launcher container/launcher.c
    else
        echo "[setup] no C compiler: models will use the Python launcher (more memory per model)"
    fi
fi
echo "[setup] ready: .venv/bin/mme-local, container/serve"
