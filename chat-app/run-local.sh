#!/usr/bin/env bash
# Starts the broker and the chat together on this machine, for trying the app:
#   chat-app/run-local.sh      (or: npm run chat)
# then open http://127.0.0.1:8000 (demo login printed below on the first start).
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres); creates the database if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

export BROKER_HOST="${BROKER_HOST:-127.0.0.1}"
export BROKER_PORT="${BROKER_PORT:-6001}"
export PUSHER_URL="${PUSHER_URL:-http://127.0.0.1:${BROKER_PORT}}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/chat}"
export RUST_LOG="${RUST_LOG:-info}"

[ -f node_modules/pusher-js/dist/web/pusher.min.js ] || npm ci --no-audit --no-fund --loglevel=error
cargo build -p broker -p chat-app

db="${DATABASE_URL##*/}"
admin="${DATABASE_URL%/*}/postgres"
if ! psql "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
  echo "creating database $db"
  psql "$admin" -qc "CREATE DATABASE \"$db\""
fi

target/debug/broker &
broker_pid=$!
trap 'kill "$broker_pid" 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
  curl -fs "$PUSHER_URL/health" >/dev/null 2>&1 && break
  kill -0 "$broker_pid" 2>/dev/null || { echo "broker exited" >&2; exit 1; }
  sleep 0.1
done

echo "chat on http://${CHAT_HOST:-127.0.0.1}:${CHAT_PORT:-8000} (broker on $PUSHER_URL); Ctrl-C stops both"
target/debug/chat-app
