# ZeroClaw agent image: the pinned ZeroClaw release from the Rust package registry, run for one
# tenant by zeroclaw-launcher (config.toml, persona files, brain.db restore and save; see
# launcher/). Build from the repository root (multi-arch: docker/README.md):
#   docker build -f docker/zeroclaw.Dockerfile -t zeroclaw-tenancy/zeroclaw:0.2.0 .

# 1. ZeroClaw itself, pinned by version and by its own lock file. This stage sees nothing of the
#    context, so it is rebuilt only when ZEROCLAW_VERSION changes (a release build of ZeroClaw and
#    its ~770 locked packages: by far the longest layer).
FROM rust:1.95-slim-bookworm AS zeroclaw
ARG ZEROCLAW_VERSION=0.1.7
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config \
 && rm -rf /var/lib/apt/lists/* \
 && cargo install zeroclaw --version "${ZEROCLAW_VERSION}" --locked --root /opt/zeroclaw \
 && /opt/zeroclaw/bin/zeroclaw --version

# 2. The workspace reduced to manifests and empty targets (docker/skeleton.sh): its output changes
#    only with a Cargo.toml or Cargo.lock, so the dependency build below stays cached.
FROM rust:1.95-slim-bookworm AS skeleton
WORKDIR /src
COPY . .
RUN sh docker/skeleton.sh /skeleton

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
# 3. Dependencies only.
COPY --from=skeleton /skeleton/ ./
RUN cargo build --release --locked -p zeroclaw-launcher --bin zeroclaw-launcher
# 4. The sources the launcher needs, touched so cargo rebuilds them over the empty targets.
COPY common/ common/
COPY launcher/ launcher/
RUN find common launcher -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p zeroclaw-launcher --bin zeroclaw-launcher \
 && cp target/release/zeroclaw-launcher /zeroclaw-launcher \
 && mkdir -p /rootfs/zeroclaw-data /rootfs/s3-state /rootfs/home/nonroot

# 5. Runtime: glibc and CA certificates, no shell, no package manager, non-root. The launcher is
#    PID 1: it forwards SIGTERM to ZeroClaw and saves brain.db inside the grace period.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=zeroclaw /opt/zeroclaw/bin/zeroclaw /usr/local/bin/zeroclaw
COPY --from=builder /zeroclaw-launcher /usr/local/bin/zeroclaw-launcher
# DATA_DIR and STATE_DIR, writable when no volume is mounted there (docker run); pods mount volumes.
COPY --from=builder --chown=65532:65532 /rootfs/ /
WORKDIR /home/nonroot
ENV AGENT_PORT=3000 \
    HOME=/home/nonroot \
    ZEROCLAW_BIN=/usr/local/bin/zeroclaw
EXPOSE 3000
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/zeroclaw-launcher"]
