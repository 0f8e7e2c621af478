#!/usr/bin/env bash
# The main job on a fresh machine: set up (.venv, Java, the launcher), then the load/evict/invoke demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mme-local demo "$@"
