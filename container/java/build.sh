#!/usr/bin/env bash
# Builds the MMS lifecycle plugin (container/java/src) into a jar that `serve` puts on MMS's class path.
#   container/java/build.sh MODEL_SERVER_JAR OUT_JAR
# Needs a JDK 17 (javac, jar); compiled against the pinned MMS's own jar. The jar records which MMS it
# was built against (version and the jar's sha256, mme-plugin.properties): `serve` refuses another.
set -euo pipefail
src="$(cd "$(dirname "$0")" && pwd)/src"
mms_jar=$1
out=$2
classes=$(mktemp -d)
trap 'rm -rf "$classes"' EXIT
javac --release 17 -encoding UTF-8 -Xlint:all,-processing -Werror -cp "$mms_jar" -d "$classes" "$src"/com/mme/mms/*.java
cp -r "$src/META-INF" "$classes/"
# In a venv the jar sits in site-packages/mms/frontend/ and its distribution's metadata names the version;
# elsewhere (the image's plugin stage) the digest alone identifies it.
version=unknown
for meta in "$(dirname "$mms_jar")"/../../multi_model_server-*.dist-info/METADATA; do
    [ -f "$meta" ] && version=$(sed -n 's/^Version: //p' "$meta" | head -n1)
done
{
    echo "mms.version=$version"
    echo "mms.jar.sha256=$(sha256sum "$mms_jar" | cut -d' ' -f1)"
} > "$classes/mme-plugin.properties"
mkdir -p "$(dirname "$out")"
jar --create --file "$out" -C "$classes" .
