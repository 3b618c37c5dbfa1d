#!/usr/bin/env bash
# Build the bincounter image (or take one already built), make sure its ECR repository exists,
# log in, tag and push. The last line printed is the image URI to give SageMaker.
#
#   scripts/push.sh                                   # build, push <account>.dkr.ecr.<region>.amazonaws.com/bincounter:<tag>
#   scripts/push.sh --image bincounter:dev --tag v1   # push an image built before
#   scripts/push.sh --registry 127.0.0.1:5000         # another registry (pull-through cache, private, tests)
#   scripts/push.sh --cpu-serve                       # the torch-free CPU serving image, tag <tag>-cpu-serve
#
# Run with --help for every option. Details: docs/image.md.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
	cat <<'EOF'
Usage: scripts/push.sh [options]

Build the image from this checkout (unless --image is given), create the ECR repository if it is
missing, log docker in with `aws ecr get-login-password`, tag and push. Prints the image URI on
its last line.

Options (each falls back to the environment variable shown, then to the default):
  -r, --region REGION       AWS region      ($AWS_REGION, $AWS_DEFAULT_REGION, `aws configure get region`, us-east-1)
  -a, --account ID          AWS account id  ($AWS_ACCOUNT_ID, else `aws sts get-caller-identity`)
  -n, --repository NAME     ECR repository  ($BINCOUNTER_REPOSITORY, bincounter)
  -t, --tag TAG             image tag       ($BINCOUNTER_TAG, else the version from pyproject.toml plus
                                             the git commit, e.g. 0.1.0-3f2c1ab, "-dirty" if uncommitted)
  -i, --image IMAGE         push this local image instead of building ($BINCOUNTER_IMAGE)
      --registry HOST       registry host instead of <account>.dkr.ecr.<region>.amazonaws.com
                            ($BINCOUNTER_REGISTRY): a private registry or a pull-through cache
      --no-login            do not run `docker login` (the registry needs none, or you logged in)
      --build-arg KEY=VALUE passed to `docker build` (repeatable), e.g. DOWNLOAD_WEIGHTS=0
      --print-labels        print the build arguments recorded in the image's labels (VERSION,
                            REVISION, SOURCE: the origin URL without credentials) and exit
      --cpu-serve           the CPU serving image (Dockerfile target serve-cpu: no torch, serve
                            only), tagged <tag>-cpu-serve so it cannot pass for the full image
  -h, --help                this help

The ECR API endpoint follows the AWS CLI's own settings (profiles, $AWS_ENDPOINT_URL).
EOF
}

die() {
	printf 'push.sh: error: %s\n' "$*" >&2
	exit 1
}
say() { printf 'push.sh: %s\n' "$*" >&2; }

# A URL as it may be recorded in an image anyone who can pull it reads: without user:password@
# (a CI clone URL carries its token there) and without query or fragment (tokens travel there too).
strip_credentials() {
	printf '%s\n' "$1" | sed -E -e 's#^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@#\1#' -e 's/[?#].*$//'
}

# The build arguments that end up as the image's org.opencontainers.image.* labels.
label_args() {
	local version source_url
	version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$REPO_ROOT/pyproject.toml" | head -n 1)
	source_url=$(strip_credentials "$(git -C "$REPO_ROOT" remote get-url origin 2>/dev/null || true)")
	printf '%s\n' "VERSION=${version:-0.0.0}" \
		"REVISION=$(git -C "$REPO_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)" \
		"SOURCE=$source_url"
}

region=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}
account=${AWS_ACCOUNT_ID:-}
repository=${BINCOUNTER_REPOSITORY:-bincounter}
tag=${BINCOUNTER_TAG:-}
image=${BINCOUNTER_IMAGE:-}
registry=${BINCOUNTER_REGISTRY:-}
login=1
build_args=()
cpu_serve=0

need_value() {
	if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value (see --help)"; fi
}
while [ $# -gt 0 ]; do
	case $1 in
	-r | --region) need_value "$@"; region=$2; shift 2 ;;
	-a | --account) need_value "$@"; account=$2; shift 2 ;;
	-n | --repository) need_value "$@"; repository=$2; shift 2 ;;
	-t | --tag) need_value "$@"; tag=$2; shift 2 ;;
	-i | --image) need_value "$@"; image=$2; shift 2 ;;
	--registry) need_value "$@"; registry=$2; shift 2 ;;
	--no-login) login=0; shift ;;
	--cpu-serve) cpu_serve=1; shift ;;
	--build-arg) need_value "$@"; build_args+=(--build-arg "$2"); shift 2 ;;
	--print-labels) label_args; exit 0 ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done

# --- prerequisites, each with its own message ------------------------------------------------
command -v docker >/dev/null 2>&1 ||
	die "docker not found: install Docker (https://docs.docker.com/engine/install/) and retry"
docker info >/dev/null 2>&1 ||
	die "cannot talk to the docker daemon: is it running, and may this user use it (docker group or sudo)?"
command -v aws >/dev/null 2>&1 ||
	die "aws CLI not found: install it (pip install awscli, or AWS CLI v2) and retry"

[[ $repository =~ ^[a-z0-9]+([._/-][a-z0-9]+)*$ ]] ||
	die "invalid repository name '$repository': lowercase letters, digits and . _ - / only"

if [ -z "$region" ]; then
	region=$(aws configure get region 2>/dev/null || true)
	region=${region:-us-east-1}
fi
export AWS_DEFAULT_REGION=$region

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
identity_err=$work/sts.err
describe_err=$work/ecr.err

if [ -z "$account" ] || [ "$login" = 1 ]; then
	caller=$(aws sts get-caller-identity --query Account --output text 2>"$identity_err") ||
		die "no usable AWS credentials (aws sts get-caller-identity failed): configure them with
  aws configure, AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY. AWS said: $(tr '\n' ' ' <"$identity_err")"
	account=${account:-$caller}
fi
[[ $account =~ ^[0-9]{12}$ ]] || die "invalid AWS account id '$account': 12 digits expected"

registry=${registry:-$account.dkr.ecr.$region.amazonaws.com}

# --- build (or take the given image) ---------------------------------------------------------
if [ -z "$tag" ]; then
	version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$REPO_ROOT/pyproject.toml" | head -n 1)
	revision=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || true)
	tag=${version:-latest}${revision:+-$revision}
	if [ -n "$revision" ] && [ -n "$(git -C "$REPO_ROOT" status --porcelain 2>/dev/null)" ]; then
		tag=$tag-dirty
	fi
fi
# The serving-only image always carries the suffix, whatever tag was asked for.
if [ "$cpu_serve" = 1 ] && [[ $tag != *-cpu-serve ]]; then tag=$tag-cpu-serve; fi
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "invalid tag '$tag'"
target_args=()
if [ "$cpu_serve" = 1 ]; then target_args=(--target serve-cpu); fi

if [ -n "$image" ]; then
	docker image inspect "$image" >/dev/null 2>&1 ||
		die "image '$image' not found locally (docker images lists what there is)"
	# The two images are told apart by their title label: never push one under the other's tag.
	title=$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.title"}}' "$image" 2>/dev/null || true)
	if [ "$title" = bincounter-cpu-serve ] && [ "$cpu_serve" = 0 ]; then
		die "image '$image' is the CPU serving image (no torch, serve only): push it with --cpu-serve"
	elif [ "$title" != bincounter-cpu-serve ] && [ "$cpu_serve" = 1 ]; then
		die "image '$image' is not the CPU serving image: build it with docker build --target serve-cpu"
	fi
else
	image="$repository:$tag"
	label_build_args=()
	while IFS= read -r arg; do label_build_args+=(--build-arg "$arg"); done < <(label_args)
	say "building $image from $REPO_ROOT"
	docker build \
		"${label_build_args[@]}" \
		${build_args[@]+"${build_args[@]}"} \
		${target_args[@]+"${target_args[@]}"} \
		-t "$image" "$REPO_ROOT" >&2 ||
		die "docker build failed"
fi

# --- repository, login, push -----------------------------------------------------------------
if aws ecr describe-repositories --repository-names "$repository" --output text >/dev/null 2>"$describe_err"; then
	say "ECR repository $repository exists in $region"
elif grep -q RepositoryNotFoundException "$describe_err"; then
	say "creating ECR repository $repository in $region"
	aws ecr create-repository --repository-name "$repository" \
		--image-scanning-configuration scanOnPush=true --output text >/dev/null ||
		die "could not create ECR repository $repository (needs ecr:CreateRepository)"
else
	die "could not look up ECR repository $repository: $(tr '\n' ' ' <"$describe_err")"
fi

if [ "$login" = 1 ]; then
	say "logging docker in to $registry"
	aws ecr get-login-password --region "$region" |
		docker login --username AWS --password-stdin "$registry" >&2 ||
		die "docker login to $registry failed (needs ecr:GetAuthorizationToken)"
fi

uri="$registry/$repository:$tag"
docker tag "$image" "$uri"
say "pushing $uri"
docker push "$uri" >&2 || die "docker push $uri failed"
echo "$uri"
