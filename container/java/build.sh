#!/usr/bin/env bash
# Builds the MMS lifecycle plugin (container/java/src) into a jar that `serve` puts on MMS's class path.
#   container/java/build.sh MODEL_SERVER_JAR OUT_JAR
# Needs a JDK 17 (javac, jar); compiled against the pinned MMS's own jar.
set -euo pipefail
src="$(cd "$(dirname "$0")" && pwd)/src"
mms_jar=$1
out=$2
classes=$(mktemp -d)
trap 'rm -rf "$classes"' EXIT
javac --release 17 -Xlint:all,-processing -Werror -cp "$mms_jar" -d "$classes" "$src"/com/mme/mms/*.java
cp -r "$src/META-INF" "$classes/"
mkdir -p "$(dirname "$out")"
jar --create --file "$out" -C "$classes" .
