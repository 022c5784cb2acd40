# Builds the same binaries as `cargo build --release --workspace`:
# sidecar, deployctl and the demo service.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace --bins \
 && install -D -m 0755 target/release/sidecar target/release/deployctl target/release/baton-demo-service -t /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
VOLUME /var/lib/baton
ENTRYPOINT ["/usr/local/bin/sidecar"]
CMD ["--config", "/etc/baton/sidecar.toml"]
