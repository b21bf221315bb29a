# The berth images: `berth` (the proxy) and `berth-acme` (the certificate worker), one image
# with both binaries. Build where images can be pulled:
#
#   docker build -t berth:latest .
#
# Multi-stage: the Rust toolchain stays in the build stage; the runtime image is Debian slim
# with CA certificates (for Let's Encrypt and https upstreams) and the two binaries.

FROM rust:1-bookworm AS build
# cmake: pingora's zlib build.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin berth --bin berth-acme \
 && install -m 0755 target/release/berth target/release/berth-acme /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/berth berth \
 && mkdir -p /var/lib/berth/certs /var/lib/berth/challenges /var/lib/berth/acme /etc/berth \
 && chown -R berth:berth /var/lib/berth
COPY --from=build /usr/local/bin/berth /usr/local/bin/berth-acme /usr/local/bin/
COPY configs/compose/berth.toml /etc/berth/berth.toml
# Not root: Docker (20.10 and later) lets any user bind ports below 1024 inside a container
# (net.ipv4.ip_unprivileged_port_start=0); the compose file sets it explicitly.
# A new named volume mounted on these directories starts out owned by berth, as they are.
USER berth
WORKDIR /var/lib/berth
EXPOSE 80 443
ENTRYPOINT ["berth", "--config", "/etc/berth/berth.toml"]
