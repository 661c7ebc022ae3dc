# syntax=docker/dockerfile:1
# One image with both binaries; pick one with the command:
#   docker build -t pusher-broker .
#   docker run --rm -p 6001:6001 -e BROKER_APP_SECRET=... pusher-broker broker
#   docker run --rm -p 8000:8000 -e DATABASE_URL=... -e PUSHER_URL=... pusher-broker chat-app
# docker-compose.yml runs the whole system (PostgreSQL, Redis, broker, chat-app).

# --- Rust: release binaries. libpq is compiled from source (pq-sys feature
# bundled_without_openssl), so no libpq-dev or OpenSSL headers are needed.
FROM rust:1-bookworm AS builder
WORKDIR /src
# .dockerignore limits the context to the workspace sources, migrations/ (embedded
# by chat-app at compile time), clients/pusher-recovery/ (the page's recovery helper,
# embedded too), web/ and the npm manifests.
COPY . .
# The workspace profile keeps debug info for local profiling; the image does not need it.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p broker -p chat-app \
    && mkdir -p /out \
    && cp target/release/broker target/release/chat-app /out/

# --- pusher-js for the chat page (runtime dependencies only).
FROM node:22-bookworm-slim AS npm
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# --- Runtime: small, non-root.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
    && install -d -o 10001 -g 10001 -m 700 /var/lib/pusher/secrets
WORKDIR /app
COPY --from=builder /out/broker /out/chat-app /usr/local/bin/
# `healthcheck PORT [PATH]`: an HTTP probe in bash, since the image has no curl.
COPY --chmod=755 docker/healthcheck /usr/local/bin/healthcheck
# Compose's first-run secrets: `init-secrets DIR` writes them once into the named
# volume (created owned by uid 10001 from the directory above); `with-secrets CMD`
# exports them for the broker and the chat. See docker-compose.yml.
COPY --chmod=755 docker/init-secrets docker/with-secrets /usr/local/bin/
COPY web /app/web
COPY --from=npm /src/node_modules/pusher-js/dist/web /app/node_modules/pusher-js/dist/web
# Inside a container the loopback defaults of both binaries are unreachable, so listen on all interfaces.
# The broker then refuses to start with the published default secret: give it BROKER_APP_SECRET
# (and BROKER_APP_ID/KEY), a config file with [[apps]], or use docker compose, which generates one.
ENV BROKER_HOST=0.0.0.0 \
    CHAT_HOST=0.0.0.0 \
    CHAT_WEB_DIR=/app/web \
    CHAT_NODE_MODULES=/app/node_modules
USER 10001:10001
EXPOSE 6001 8000
CMD ["broker"]
