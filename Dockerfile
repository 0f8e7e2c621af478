# SageMaker multi-model endpoint (MME) image for scikit-learn models.
#
#   docker build -t sklearn-mme .
#   docker run -p 8080:8080 -v "$PWD/models:/opt/ml/models:ro" sklearn-mme serve
#
# BASE_IMAGE lets the tests build on a registry-free Debian bookworm base made with debootstrap
# (tests/image/run_image_tests.sh). BUILD_CA_CERT names a CA bundle that is *mounted* at build time
# (podman build -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro --build-arg
# BUILD_CA_CERT=/run/host-ca.crt) for networks that intercept HTTPS; it is never copied into the image.
ARG BASE_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------------------------
# Stage 1: the virtual environment with the pinned dependencies (pip and its caches stay in this stage).
FROM ${BASE_IMAGE} AS venv
ARG BUILD_CA_CERT=""
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN set -eu; \
    apt_opts=""; \
    if [ -n "$BUILD_CA_CERT" ] && [ -f "$BUILD_CA_CERT" ]; then apt_opts="-o Acquire::https::CAInfo=$BUILD_CA_CERT"; fi; \
    apt-get $apt_opts update; \
    apt-get $apt_opts install -y --no-install-recommends python3 python3-venv libgomp1; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    python3 -m venv /opt/venv

# Only pyproject.toml here, so this layer is rebuilt when the pins change and not when the code does.
COPY pyproject.toml /tmp/build/pyproject.toml
RUN set -eu; \
    if [ -n "$BUILD_CA_CERT" ] && [ -f "$BUILD_CA_CERT" ]; then export PIP_CERT="$BUILD_CA_CERT"; fi; \
    python3 -c 'import sys, tomllib; deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]; open(sys.argv[2], "w").write("\n".join(deps) + "\n")' \
        /tmp/build/pyproject.toml /tmp/build/requirements.txt; \
    cat /tmp/build/requirements.txt; \
    /opt/venv/bin/pip install -r /tmp/build/requirements.txt; \
    /opt/venv/bin/pip check; \
    /opt/venv/bin/python -m pip uninstall -y -q pip; \
    site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
    find "$site/numpy" "$site/scipy" "$site/sklearn" -depth -type d -name tests -exec rm -rf {} +; \
    /opt/venv/bin/python -c 'import numpy, scipy.sparse, scipy.special, sklearn.ensemble, sklearn.pipeline, mms, skops.io, joblib, psutil, xgboost, lightgbm'; \
    rm -rf /tmp/build /root/.cache
# pip is removed (nothing installs at run time).
# The test suites of numpy, scipy and scikit-learn (~65 MB) are not needed to serve.

# ---------------------------------------------------------------------------------------------------------
# Stage 2: a Java 17 runtime with only the modules MMS's front end uses (jdeps on model-server.jar), made
# with jlink from Debian's OpenJDK 17: ~50 MB instead of ~190 MB for openjdk-17-jre-headless and its
# font, sound and printing libraries.
FROM ${BASE_IMAGE} AS jre
ARG BUILD_CA_CERT=""
ENV DEBIAN_FRONTEND=noninteractive
RUN set -eu; \
    apt_opts=""; \
    if [ -n "$BUILD_CA_CERT" ] && [ -f "$BUILD_CA_CERT" ]; then apt_opts="-o Acquire::https::CAInfo=$BUILD_CA_CERT"; fi; \
    mkdir -p /usr/share/man/man1; \
    apt-get $apt_opts update; \
    apt-get $apt_opts install -y --no-install-recommends openjdk-17-jdk-headless; \
    jlink --output /opt/java --strip-java-debug-attributes --no-man-pages --no-header-files --compress=2 --add-modules \
java.base,java.compiler,java.desktop,java.instrument,java.logging,java.management,java.naming,java.rmi,\
java.scripting,java.sql,java.xml,jdk.crypto.ec,jdk.management,jdk.naming.dns,jdk.net,jdk.sctp,jdk.unsupported,\
jdk.zipfs; \
    /opt/java/bin/java -version

# ---------------------------------------------------------------------------------------------------------
# Stage 3: the per-model launcher in C (container/launcher.c): ~0.2 MB per loaded model instead of ~4.5 MB
# for the Python fallback. The compiler stays in this stage.
FROM ${BASE_IMAGE} AS launcher
ARG BUILD_CA_CERT=""
ENV DEBIAN_FRONTEND=noninteractive
COPY container/launcher.c /tmp/launcher.c
RUN set -eu; \
    apt_opts=""; \
    if [ -n "$BUILD_CA_CERT" ] && [ -f "$BUILD_CA_CERT" ]; then apt_opts="-o Acquire::https::CAInfo=$BUILD_CA_CERT"; fi; \
    apt-get $apt_opts update; \
    apt-get $apt_opts install -y --no-install-recommends gcc libc6-dev; \
    gcc -O2 -Wall -Wextra -o /opt/mme-launcher /tmp/launcher.c

# ---------------------------------------------------------------------------------------------------------
# Stage 4: our MMS plugin (container/java), compiled against the pinned MMS jar with the JDK of stage 2.
FROM jre AS plugin
COPY --from=venv /opt/venv/lib/python3.11/site-packages/mms/frontend/model-server.jar /tmp/model-server.jar
COPY container/java /tmp/java
RUN /tmp/java/build.sh /tmp/model-server.jar /opt/mme-mms-plugin.jar

# ---------------------------------------------------------------------------------------------------------
# Stage 5: the serving code under its import namespace, without the Java and C sources compiled above.
FROM ${BASE_IMAGE} AS code
COPY handler /opt/program/sklearn_mme/handler
COPY container /opt/program/sklearn_mme/container
RUN rm -rf /opt/program/sklearn_mme/container/java /opt/program/sklearn_mme/container/launcher.c \
        /opt/program/sklearn_mme/container/build_native.sh /opt/program/sklearn_mme/container/lib

# ---------------------------------------------------------------------------------------------------------
# Stage 6: the runtime image: Debian's python3 (no -venv, no pip), the jlinked Java 17, tini; no compilers.
FROM ${BASE_IMAGE}
ARG BUILD_CA_CERT=""
ENV DEBIAN_FRONTEND=noninteractive
# Like debian:bookworm-slim: no docs, man pages or translations from the packages installed here.
RUN set -eu; \
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
        'path-exclude /usr/share/lintian/*' > /etc/dpkg/dpkg.cfg.d/90-slim; \
    apt_opts=""; \
    if [ -n "$BUILD_CA_CERT" ] && [ -f "$BUILD_CA_CERT" ]; then apt_opts="-o Acquire::https::CAInfo=$BUILD_CA_CERT"; fi; \
    apt-get $apt_opts update; \
    apt-get $apt_opts install -y --no-install-recommends python3 tini passwd libgomp1; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt/* /var/log/dpkg.log /tmp/*; \
    useradd --uid 1000 --user-group --create-home --home-dir /home/model-server \
        --shell /usr/sbin/nologin model-server; \
    install -d -o model-server -g model-server -m 0750 /home/model-server/tmp; \
    install -d -m 0755 /opt/ml /opt/ml/models /opt/program

COPY --from=jre /opt/java /opt/java
COPY --from=venv /opt/venv /opt/venv

# The code last: a code change rebuilds only the layers below. Root-owned and read-only for the server user.
# Serving code only, under its import namespace (sklearn_mme.handler, sklearn_mme.container): the build
# context carries no harness, bench or tests (.dockerignore), and the Java and C sources stay in the stages
# that compile them.
COPY --from=code /opt/program/sklearn_mme /opt/program/sklearn_mme
COPY --from=launcher /opt/mme-launcher /opt/program/sklearn_mme/container/lib/mme-launcher
COPY --from=plugin /opt/mme-mms-plugin.jar /opt/program/sklearn_mme/container/lib/mme-mms-plugin.jar
# The entry point: SageMaker runs `docker run IMAGE serve`; `serve` execs container/serve (so tini's signals
# reach it directly), anything else runs as a command (`docker run IMAGE python3 -c ...`).
# Imports resolve to /opt/program via a .pth file: one copy of the code, next to container/serve and its data
# files (container/etc, container/lib), byte-compiled here since the server user cannot write __pycache__ there.
RUN set -eu; \
    printf '%s\n' \
        '#!/bin/sh' \
        '# SageMaker runs `docker run IMAGE serve`; other arguments run as a command.' \
        'set -e' \
        'if [ "$#" -eq 0 ]; then set -- serve; fi' \
        'if [ "$1" = serve ]; then shift; exec /opt/program/sklearn_mme/container/serve "$@"; fi' \
        'exec "$@"' > /opt/program/entrypoint.sh; \
    site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
    echo /opt/program > "$site/sklearn_mme.pth"; \
    find /opt/program -name __pycache__ -prune -exec rm -rf {} +; \
    /opt/venv/bin/python -m compileall -q /opt/program/sklearn_mme; \
    chown -R root:root /opt/program; \
    chmod -R a+rX,go-w /opt/program; \
    chmod 0755 /opt/program/entrypoint.sh; \
    chmod 0755 /opt/program/sklearn_mme/container/serve; \
    cd /home/model-server && /opt/venv/bin/python -c 'import sklearn_mme.container.server as s; print("code at", s.__file__)'

LABEL com.amazonaws.sagemaker.capabilities.multi-models=true \
      com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      org.opencontainers.image.title="sklearn-mme" \
      org.opencontainers.image.description="SageMaker multi-model endpoint container for scikit-learn models"

ENV PATH="/opt/venv/bin:/opt/java/bin:${PATH}" \
    JAVA_HOME=/opt/java \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TMPDIR=/home/model-server/tmp \
    MME_LAUNCHER=c \
    HOME=/home/model-server \
    SAGEMAKER_MULTI_MODEL=true

USER model-server
WORKDIR /home/model-server
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "-s", "--", "/opt/program/entrypoint.sh"]
CMD ["serve"]
