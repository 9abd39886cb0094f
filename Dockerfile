# syntax=docker/dockerfile:1
# Build: the same command as on a workstation. Dependencies and build output live in
# BuildKit cache mounts, so a change to authd's own code rebuilds only authd.
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
# `authd --version` names the commit; there is no .git in the build context.
ARG AUTHD_COMMIT=unknown
ENV AUTHD_COMMIT=${AUTHD_COMMIT}
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin authd \
 && cp target/release/authd /authd \
 && mkdir -p /data

# Run: glibc and nothing else, as a non-root user. The release profile strips the binary.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /authd /usr/local/bin/authd
COPY --from=build --chown=nonroot:nonroot /data /data
WORKDIR /data
VOLUME ["/data"]
ENV AUTHD_LISTEN=0.0.0.0:50051 \
    AUTHD_DATABASE_URL=sqlite:///data/authd.db?mode=rwc \
    AUTHD_LOG_FORMAT=json
EXPOSE 50051
# Reads AUTHD_LISTEN and AUTHD_TLS_CERT as the server does: TLS on, the check speaks it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/authd", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/authd"]
CMD ["serve"]
