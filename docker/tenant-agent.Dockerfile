# Reference agent image (the agent contract of DESIGN.md): echoes with a count kept in brain.db.
# Build from the repository root (multi-arch: docker/README.md):
#   docker build -f docker/tenant-agent.Dockerfile -t zeroclaw-tenancy/tenant-agent:0.2.0 .

# 1. The workspace reduced to manifests and empty targets (docker/skeleton.sh). This stage sees every
#    source change, but its output changes only with a Cargo.toml or Cargo.lock, so the layer that
#    copies it below, and the dependency build after it, stay cached.
FROM rust:1.95-slim-bookworm AS skeleton
WORKDIR /src
COPY . .
RUN sh docker/skeleton.sh /skeleton

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
# 2. Dependencies only.
COPY --from=skeleton /skeleton/ ./
RUN cargo build --release --locked -p tenant-agent --bin tenant-agent
# 3. The sources this binary needs, touched so cargo rebuilds them over the empty targets. Building
#    one package compiles shared crates with only the features that package enables.
COPY common/ common/
COPY agent/ agent/
RUN find common agent -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p tenant-agent --bin tenant-agent \
 && cp target/release/tenant-agent /tenant-agent \
 && mkdir -p /rootfs/zeroclaw-data /rootfs/s3-state

# 4. Runtime: glibc and CA certificates, no shell, no package manager, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /tenant-agent /usr/local/bin/tenant-agent
# DATA_DIR and STATE_DIR, writable when no volume is mounted there (docker run); pods mount volumes.
COPY --from=builder --chown=65532:65532 /rootfs/ /
WORKDIR /home/nonroot
ENV AGENT_PORT=3000
EXPOSE 3000
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tenant-agent"]
