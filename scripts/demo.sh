#!/usr/bin/env bash
# Quick start, command 1: install, start the server on embedded defaults (SQLite, in-memory channel
# layer), run the scripted end-to-end demo against it over real HTTP, then keep serving until Ctrl-C.
# DEMO_EXIT=1 stops the server after the demo (used by the tests).
source "$(dirname "$0")/_venv.sh"
PORT="${PORT:-8000}"
mkdir -p var
rm -f var/demo.sqlite3 && rm -rf var/demo
export DATABASE_URL="sqlite:///$PWD/var/demo.sqlite3"
unset REDIS_URL
.venv/bin/python manage.py migrate -v 0
.venv/bin/daphne -b 127.0.0.1 -p "$PORT" config.asgi:application > var/demo-server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 1 150); do
  .venv/bin/python - "$PORT" <<'PY' && break
import socket, sys
s = socket.socket(); s.settimeout(0.2)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
  kill -0 $server 2>/dev/null || { cat var/demo-server.log; echo "the server did not start" >&2; exit 1; }
  sleep 0.1
done
echo "server: http://127.0.0.1:$PORT (log in var/demo-server.log)"
.venv/bin/python -m client demo --server "http://127.0.0.1:$PORT" --demo-home var/demo
if [ "${DEMO_EXIT:-0}" = 1 ]; then exit 0; fi
echo
echo "The server keeps running at http://127.0.0.1:$PORT; press Ctrl-C to stop it."
wait $server
