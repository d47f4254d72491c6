#!/usr/bin/env bash
# A Redis for development: Debian's redis-server on loopback, durable (append-only file), in the background.
#
#   bash scripts/redis.sh [start] [PORT] [DIR]   # PORT: default 6379, 0 = a free port; DIR: default .redis/
#   bash scripts/redis.sh stop [DIR]
#
# Prints the URL to give `ldm3d serve --queue` and `ldm3d worker --queue`, e.g. redis://127.0.0.1:6379/0.
# Data, log and pid file live in DIR; `stop` shuts it down cleanly (the data stays for the next start).
set -euo pipefail
cmd=start
if [[ "${1:-}" == start || "${1:-}" == stop ]]; then cmd=$1; shift; fi
command -v redis-server >/dev/null || { echo "redis.sh: redis-server is not installed: apt-get install redis-server" >&2; exit 2; }

if [[ $cmd == stop ]]; then
  dir=${1:-.redis}
  [[ -f "$dir/redis.pid" ]] || { echo "redis.sh: no $dir/redis.pid: nothing to stop" >&2; exit 0; }
  pid=$(cat "$dir/redis.pid")
  kill "$pid" 2>/dev/null || true                  # SIGTERM: redis saves and exits
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$dir/redis.pid"
  echo "redis.sh: stopped (pid $pid)"
  exit 0
fi

port=${1:-6379}
dir=${2:-.redis}
if [[ ! $port =~ ^[0-9]+$ ]] || (( port > 65535 )); then echo "redis.sh: PORT=$port: use 0..65535 (0: a free port)" >&2; exit 2; fi
if (( port == 0 )); then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes --dir "$dir" \
  --appendonly yes --appendfsync everysec --save "" \
  --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
for _ in $(seq 50); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && { echo "redis://127.0.0.1:$port/0"; exit 0; }
  sleep 0.1
done
echo "redis.sh: redis-server did not answer on 127.0.0.1:$port; see $dir/redis.log" >&2
exit 1
