# Build: the same command as on a workstation.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin authd \
 && mkdir -p /data

# Run: glibc and nothing else, as a non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/authd /usr/local/bin/authd
COPY --from=build --chown=nonroot:nonroot /data /data
WORKDIR /data
VOLUME ["/data"]
ENV AUTHD_LISTEN=0.0.0.0:50051 \
    AUTHD_DATABASE_URL=sqlite:///data/authd.db?mode=rwc \
    AUTHD_LOG_FORMAT=json
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/authd", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/authd"]
CMD ["serve"]
