# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run on a small Debian with a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p syncfleet-api --bin syncfleet \
    && cp target/release/syncfleet /syncfleet

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/syncfleet --create-home syncfleet
COPY --from=build /syncfleet /usr/local/bin/syncfleet
USER syncfleet
WORKDIR /var/lib/syncfleet
ENV SYNCFLEET_LISTEN=0.0.0.0:8080 \
    SYNCFLEET_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/syncfleet"]
CMD ["standalone"]
