#!/usr/bin/env bash
# The test command (README, .ci/run): set up if needed, lint, the pytest suite; then, in CI or with
# RUN_IMAGE_TESTS=1, the image tests (install podman if needed, build the Dockerfile, test the image).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
# The image tests inside tests/image run only from run_image_tests.sh, once the image is built.
env -u MME_IMAGE_TESTS .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
if [ "${CI:-}" = "true" ] || [ "${RUN_IMAGE_TESTS:-}" = "1" ]; then
    bash tests/image/run_image_tests.sh
fi
