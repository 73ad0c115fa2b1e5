# syntax=docker/dockerfile:1
#
# One image, two binaries: `gateway` (WHIP/WHEP, tier 0) and `relay` (tier 1+, and
# `relay cluster-cert`). There is no ENTRYPOINT: each Kubernetes workload picks its binary with
# `command:` (k8s/gateway.yaml runs `gateway`, k8s/relay.yaml runs `relay`), and locally:
#
#   docker build -t wish .
#   docker run --rm --network host wish gateway
#   docker run --rm -v "$PWD/secret:/out" wish relay cluster-cert --out /out
#
# Only the workspace manifests and the sources of the crates that are built are copied, so the
# host's target/ (many GB) and whip-tests' node_modules never enter the build.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
# The workspace lists whip-tests as a member: cargo needs its manifest and declared targets to load
# the workspace, even though nothing of it is built here.
COPY Cargo.toml Cargo.lock ./
COPY gateway gateway
COPY relay relay
COPY whip-tests/Cargo.toml whip-tests/Cargo.toml
COPY whip-tests/src whip-tests/src
# dimpl (str0m's DTLS) is vendored and patched ([patch.crates-io] in Cargo.toml).
COPY vendor/dimpl vendor/dimpl
COPY vendor/str0m vendor/str0m
# aws-lc-sys builds its C code with the image's gcc (no cmake needed). Cache mounts keep the
# registry and the target dir between builds; the binaries are copied out of the cached target.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gateway -p relay \
 && mkdir -p /out \
 && cp target/release/gateway target/release/relay /out/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates for any outbound HTTPS (cluster links do not use it: they are pinned to the
# cluster certificate). No init process is needed: both binaries handle SIGTERM themselves.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 wish \
 && useradd --system --uid 10001 --gid wish --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin wish
COPY --from=build /out/gateway /out/relay /usr/local/bin/
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# HTTP (WHIP/WHEP/pages), WebRTC media (one UDP port), cluster links (QUIC), relay stats.
EXPOSE 8080/tcp 8189/udp 7000/udp 7080/tcp
CMD ["gateway"]
