#!/usr/bin/env bash
# image.sh: build the eventsync OCI image with podman or docker.
#
#   scripts/image.sh                         # host go build + Dockerfile.prebuilt (no base image pulled)
#   scripts/image.sh --from-source           # Dockerfile: multi-stage, pulls golang and builds inside
#   scripts/image.sh --tag eventsync:v1.2.3 --save eventsync.tar
#
# Options:
#   --engine podman|docker   default: podman if installed, else docker
#   --tag REF                image name (default localhost/eventsync:VERSION)
#   --from-source            build with the multi-stage Dockerfile instead
#   --save FILE              also write the image to FILE (OCI archive with
#                            podman, "docker save" format with docker)
#   --platform OS/ARCH       target platform (default: the host's)
#
# The version, commit and build date are stamped into the binary
# (eventsync version) and the image's OCI labels: VERSION from
# "git describe --tags --always --dirty" (override with $VERSION), COMMIT
# the HEAD commit, DATE now in UTC, or $SOURCE_DATE_EPOCH when set
# (reproducible builds). Prints the image reference on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

engine="" tag="" from_source=false save="" platform=""
while [[ $# -gt 0 ]]; do
	case $1 in
	--engine) engine=$2; shift 2 ;;
	--tag) tag=$2; shift 2 ;;
	--from-source) from_source=true; shift ;;
	--save) save=$2; shift 2 ;;
	--platform) platform=$2; shift 2 ;;
	-h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "image.sh: unknown argument $1 (see $0 --help)" >&2; exit 2 ;;
	esac
done
if [[ -z $engine ]]; then
	if command -v podman >/dev/null; then engine=podman
	elif command -v docker >/dev/null; then engine=docker
	else echo "image.sh: needs podman or docker (apt-get install podman)" >&2; exit 2
	fi
fi
command -v "$engine" >/dev/null || { echo "image.sh: $engine is not installed" >&2; exit 2; }

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
COMMIT=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || true)}
if [[ -n ${SOURCE_DATE_EPOCH:-} ]]; then
	DATE=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
else
	DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
fi
tag=${tag:-localhost/eventsync:${VERSION}}
goos=${platform%/*} goarch=${platform#*/}
if [[ -z $platform ]]; then
	goos=$(go env GOOS) goarch=$(go env GOARCH)
	platform=$goos/$goarch
fi
buildargs=(--build-arg "VERSION=$VERSION" --build-arg "COMMIT=$COMMIT" --build-arg "DATE=$DATE")

if $from_source; then
	"$engine" build --platform "$platform" "${buildargs[@]}" -f Dockerfile -t "$tag" .
else
	certs=/etc/ssl/certs/ca-certificates.crt
	[[ -r $certs ]] || { echo "image.sh: no CA bundle at $certs (apt-get install ca-certificates)" >&2; exit 2; }
	ctx=$(mktemp -d "${TMPDIR:-/tmp}/eventsync-image.XXXXXX")
	trap 'rm -rf "$ctx"' EXIT
	pkg=github.com/eventsync/eventsync/internal/cli
	CGO_ENABLED=0 GOOS=$goos GOARCH=$goarch go build -trimpath \
		-ldflags "-s -w -X $pkg.Version=$VERSION -X $pkg.Commit=$COMMIT -X $pkg.Date=$DATE" \
		-o "$ctx/eventsync" ./cmd/eventsync
	cp "$certs" "$ctx/ca-certificates.crt"
	mkdir -p "$ctx/rootfs/etc" "$ctx/rootfs/tmp" "$ctx/data"
	chmod 1777 "$ctx/rootfs/tmp"
	cp deploy/image/passwd deploy/image/group "$ctx/rootfs/etc/"
	"$engine" build --platform "$platform" "${buildargs[@]}" -f Dockerfile.prebuilt -t "$tag" "$ctx"
fi

if [[ -n $save ]]; then
	rm -f "$save"
	if [[ $engine == podman ]]; then
		podman save --format oci-archive -o "$save" "$tag"
	else
		docker save -o "$save" "$tag"
	fi
fi
echo "$tag"
