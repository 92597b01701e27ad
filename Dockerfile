# The server image the Helm chart (helm/sfu) runs. Multi-stage: build the
# release binary, then a slim Debian runtime with an unprivileged user (uid
# 10001, as the chart's securityContext expects). The web client is embedded
# in the binary; nothing is written to disk at run time.
#   docker build -t ghcr.io/sfu-project/sfu:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# npm installs the meeting page's SDK (client-web/package-lock.json) at build
# time; the DTLS links the system OpenSSL (libssl-dev, found by pkg-config).
RUN apt-get update && apt-get install -y --no-install-recommends npm libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked -p sfu

FROM debian:bookworm-slim
# libssl3: the server's DTLS (OpenSSL 3.0, Debian's security updates).
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin sfu
COPY --from=build /src/target/release/sfu /usr/local/bin/sfu
USER 10001
# HTTP (WHIP, WHEP, rooms, /metrics), ICE-TCP, media UDP.
EXPOSE 8080/tcp 7881/tcp 7882/udp
ENTRYPOINT ["/usr/local/bin/sfu"]
CMD ["serve"]
