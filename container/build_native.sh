#!/usr/bin/env bash
# Compiles what `serve` needs beside the Python code into OUT_DIR (the package's lib/ folder):
#   mme-mms-plugin.jar  our MMS plugin (container/java), against MMS's own jar: needs a JDK 17 (javac)
#   mme-launcher        the per-model launcher (container/launcher.c); without a C compiler `serve` uses
#                       the Python launcher (~4 MB more per model)
# Used by scripts/setup.sh (a checkout) and setup.py (a wheel). Rebuilds only what is older than its sources.
#   container/build_native.sh OUT_DIR MODEL_SERVER_JAR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out=$1
mms_jar=$2
mkdir -p "$out"
if ! command -v javac >/dev/null 2>&1; then
    echo "build_native: javac not found: install a JDK 17 (openjdk-17-jdk-headless) to build the MMS plugin" >&2
    exit 1
fi
jar="$out/mme-mms-plugin.jar"
if [ ! -f "$jar" ] || [ -n "$(find "$here/java/src" "$mms_jar" -newer "$jar" -print -quit)" ]; then
    echo "build_native: building the MMS plugin" >&2
    "$here/java/build.sh" "$mms_jar" "$jar"
fi
launcher="$out/mme-launcher"
if [ ! -x "$launcher" ] || [ "$here/launcher.c" -nt "$launcher" ]; then
    if command -v cc >/dev/null 2>&1; then
        cc -O2 -Wall -Wextra -o "$launcher" "$here/launcher.c"
    else
        echo "build_native: no C compiler: models will use the Python launcher (more memory per model)" >&2
    fi
fi
