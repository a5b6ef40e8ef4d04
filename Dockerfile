# Two stages: the build (Rust, and what HiGHS needs to compile from source)
# and a slim runtime with both binaries, `ballast` and `ballast-worker`.
# docker-compose.yml runs every service of the stack from this one image.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cmake libclang-dev g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ballast -p ballast-worker \
 && cp target/release/ballast target/release/ballast-worker /usr/local/bin/

FROM debian:bookworm-slim
# curl: the stack's one-shot `init` service creates the cluster with it.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/ballast /usr/local/bin/ballast-worker /usr/local/bin/
COPY examples/stack-topology.json /etc/ballast/topology.json
USER nobody
WORKDIR /tmp
EXPOSE 8420 9100
CMD ["ballast", "serve"]
