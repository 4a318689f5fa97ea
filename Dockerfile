# eventsync image, built from source (multi-stage).
#
#   scripts/image.sh --from-source            # docker or podman, stamps version/commit/date
#   docker build -t eventsync --build-arg VERSION=v1.2.3 --build-arg COMMIT=$(git rev-parse HEAD) .
#
# The result is FROM scratch: one static binary (CGO_ENABLED=0), the CA
# bundle, a passwd entry for the non-root user 65532, /tmp and /data. No
# shell, no package manager. Dockerfile.prebuilt packages an already built
# binary into the same layout without pulling any image (GoReleaser's
# convention); keep the final stages of both files alike.
ARG GO_IMAGE=golang:1.26-bookworm

FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG VERSION=dev
ARG COMMIT=
ARG DATE=
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN set -eu; pkg=github.com/eventsync/eventsync/internal/cli; \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X $pkg.Version=$VERSION -X $pkg.Commit=$COMMIT -X $pkg.Date=$DATE" \
      -o /stage/eventsync ./cmd/eventsync; \
    cp /etc/ssl/certs/ca-certificates.crt /stage/ca-certificates.crt; \
    mkdir -p /stage/rootfs/etc /stage/rootfs/tmp /stage/data; \
    chmod 1777 /stage/rootfs/tmp; \
    cp deploy/image/passwd deploy/image/group /stage/rootfs/etc/

FROM scratch
ARG VERSION=dev
ARG COMMIT=
ARG DATE=
COPY --from=build /stage/rootfs/ /
COPY --from=build /stage/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build --chown=65532:65532 /stage/data /data
COPY --from=build /stage/eventsync /usr/local/bin/eventsync
ENV PATH=/usr/local/bin
LABEL org.opencontainers.image.title="eventsync" \
      org.opencontainers.image.description="Keeps a third-party API in sync with an application's data through a message bus" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$COMMIT" \
      org.opencontainers.image.created="$DATE"
USER 65532:65532
WORKDIR /data
# 9090: a worker's admin address (metrics, /livez, /readyz); 9091: the relay's.
EXPOSE 9090 9091
ENTRYPOINT ["eventsync"]
CMD ["help"]
