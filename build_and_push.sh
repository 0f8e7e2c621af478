#!/usr/bin/env bash
# Build the sklearn-mme image and push it to Amazon ECR; the image URI is the last line of standard output.
#
#   ./build_and_push.sh [--dry-run] IMAGE_NAME [TAG]
#   IMAGE_URI=$(./build_and_push.sh sklearn-mme)     # everything else goes to standard error
#
# IMAGE_NAME  the ECR repository (created with scan-on-push if it does not exist)
# TAG         default: the git short sha of the build context; a dirty work tree needs an explicit TAG
# --dry-run   print every aws / container command instead of running it (stdout, one per line; the URI last).
#             Only git is run (read-only, for the tag); account and region come from AWS_ACCOUNT_ID and
#             AWS_REGION / AWS_DEFAULT_REGION when set, else are shown as ACCOUNT_ID / REGION.
#
# Environment:
#   CONTAINER_CLI   docker or podman (default: docker if on PATH, else podman)
#   AWS_REGION, AWS_DEFAULT_REGION   the region (else `aws configure get region`)
#   BUILD_ARGS      extra build flags, split on whitespace, e.g.
#                   BUILD_ARGS="--build-arg BASE_IMAGE=localhost/bookworm-base --network host"
#   BUILD_CONTEXT   the directory with the Dockerfile (default: this script's directory)
set -euo pipefail

prog=build_and_push.sh
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }
usage() {
    local line
    while IFS= read -r line; do
        case $line in '#!'*) ;; '#'*) line=${line#\#}; printf '%s\n' "${line# }" ;; *) break ;; esac
    done <"${BASH_SOURCE[0]}"
}

dry_run=0
positional=()
for arg in "$@"; do
    case $arg in
        --dry-run) dry_run=1 ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option: $arg" ;;
        *) positional+=("$arg") ;;
    esac
done
if [ "${#positional[@]}" -lt 1 ] || [ "${#positional[@]}" -gt 2 ]; then
    usage >&2
    die "expected IMAGE_NAME [TAG]"
fi
name=${positional[0]}
tag=${positional[1]:-}

# ECR's rules for repository names and tags.
[[ $name =~ ^([a-z0-9]+([._-][a-z0-9]+)*/)*[a-z0-9]+([._-][a-z0-9]+)*$ ]] \
    || die "invalid repository name '$name' (lowercase letters, digits, . _ - and / separators)"
if [ -n "$tag" ]; then
    [[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "invalid tag '$tag'"
fi

context=${BUILD_CONTEXT:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
[ -f "$context/Dockerfile" ] || die "no Dockerfile in $context"

# A command as a line that can be pasted into a shell.
quote() {
    local line
    line=$(printf '%q ' "$@")
    printf '%s' "${line% }"
}
# Print a command line: with --dry-run to stdout, else as a trace to stderr.
say() { if [ "$dry_run" -eq 1 ]; then printf '%s\n' "$1"; else printf '+ %s\n' "$1" >&2; fi; }
show() { say "$(quote "$@")"; }
# Run a command with its output on stderr (stdout is reserved for the URI), or only show it with --dry-run.
run() {
    show "$@"
    [ "$dry_run" -eq 1 ] || "$@" >&2
}
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found on PATH ($2)"; }

# --- tools -----------------------------------------------------------------------------------------------
cli=${CONTAINER_CLI:-}
if [ -z "$cli" ]; then
    if command -v docker >/dev/null 2>&1; then cli=docker
    elif command -v podman >/dev/null 2>&1; then cli=podman
    elif [ "$dry_run" -eq 1 ]; then cli=docker
    else die "neither docker nor podman found on PATH (install one, or set CONTAINER_CLI)"
    fi
fi
case ${cli##*/} in
    docker | podman) ;;
    *) die "CONTAINER_CLI must be docker or podman, not '$cli'" ;;
esac
if [ "$dry_run" -eq 0 ]; then
    need aws "install the AWS CLI v2"
    need "$cli" "install it, or set CONTAINER_CLI to docker or podman"
fi

# --- tag: the git short sha of a clean tree ---------------------------------------------------------------
if [ -z "$tag" ]; then
    need git "or give TAG explicitly"
    git -C "$context" rev-parse --is-inside-work-tree >/dev/null 2>&1 \
        || die "$context is not a git work tree: give TAG explicitly"
    if [ -n "$(git -C "$context" status --porcelain)" ]; then
        die "the work tree has uncommitted changes: commit them, or give TAG explicitly"
    fi
    tag=$(git -C "$context" rev-parse --short HEAD)
fi

# --- account and region -----------------------------------------------------------------------------------
show aws sts get-caller-identity --query Account --output text
if [ "$dry_run" -eq 1 ]; then
    account=${AWS_ACCOUNT_ID:-ACCOUNT_ID}
else
    account=$(aws sts get-caller-identity --query Account --output text 2>/dev/null) \
        || die "no usable AWS credentials: 'aws sts get-caller-identity' failed (set AWS_PROFILE or run 'aws configure')"
    [[ $account =~ ^[0-9]{12}$ ]] || die "unexpected account id from aws sts get-caller-identity: '$account'"
fi

region=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}
if [ -z "$region" ]; then
    show aws configure get region
    if [ "$dry_run" -eq 1 ]; then
        region=REGION
    else
        region=$(aws configure get region 2>/dev/null || true)
        [ -n "$region" ] || die "no AWS region: set AWS_REGION or run 'aws configure set region REGION'"
    fi
fi

registry="$account.dkr.ecr.$region.amazonaws.com"
image_uri="$registry/$name:$tag"

# --- repository, login, build, push -----------------------------------------------------------------------
describe=(aws ecr describe-repositories --repository-names "$name" --region "$region")
create=(aws ecr create-repository --repository-name "$name" --image-scanning-configuration scanOnPush=true
        --region "$region")
if [ "$dry_run" -eq 1 ]; then
    say "$(quote "${describe[@]}") || $(quote "${create[@]}")"
else
    show "${describe[@]}"
    if ! "${describe[@]}" >/dev/null 2>&1; then
        printf '%s: repository %s does not exist in %s: creating it\n' "$prog" "$name" "$region" >&2
        run "${create[@]}" || die "could not create the ECR repository '$name' in $region"
    fi
fi

say "$(quote aws ecr get-login-password --region "$region") | $(quote "$cli" login --username AWS --password-stdin "$registry")"
if [ "$dry_run" -eq 0 ]; then
    aws ecr get-login-password --region "$region" | "$cli" login --username AWS --password-stdin "$registry" >&2 \
        || die "could not log in to $registry"
fi

build=("$cli" build --platform linux/amd64)
# SageMaker wants a single-platform image manifest: no buildx attestation index, Docker v2 format from podman.
if [ "${cli##*/}" = podman ]; then build+=(--format docker); fi
if [ "${cli##*/}" = docker ] && [ "${DOCKER_PROVENANCE:-false}" = false ]; then
    if [ "$dry_run" -eq 1 ] || "$cli" buildx version >/dev/null 2>&1; then build+=(--provenance=false); fi
fi
extra=()
if [ -n "${BUILD_ARGS:-}" ]; then read -r -a extra <<<"$BUILD_ARGS"; fi
build+=("${extra[@]}" -t "$image_uri" -f "$context/Dockerfile" "$context")
run "${build[@]}" || die "the image build failed"
run "$cli" push "$image_uri" || die "could not push $image_uri"

printf '%s\n' "$image_uri"
