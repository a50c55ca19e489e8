# Router image: Telegram webhooks, durable inbox, per-tenant delivery.
# Build from the repository root (multi-arch: docker/README.md):
#   docker build -f docker/router.Dockerfile -t zeroclaw-tenancy/router:0.2.0 .

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
RUN cargo build --release --locked -p router --bin router
# 3. The sources this binary needs, touched so cargo rebuilds them over the empty targets. Building
#    one package compiles shared crates with only the features that package enables.
COPY common/ common/
COPY router/ router/
RUN find common router -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p router --bin router \
 && cp target/release/router /router

# 4. Runtime: glibc and CA certificates, no shell, no package manager, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /router /usr/local/bin/router
WORKDIR /home/nonroot
ENV PORT=9090
EXPOSE 9090
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/router"]
