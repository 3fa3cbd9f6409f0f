# Shared setup for scripts/demo and scripts/test: Python 3.12 venv, PostgreSQL, Redis.
# Sourced, not run. Honours GATEHOUSE_DB_HOST/PORT and GATEHOUSE_REDIS_URL.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '\033[1m[gatehouse]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[gatehouse]\033[0m %s\n' "$*" >&2; exit 1; }

find_python() {
  local c
  for c in "${GATEHOUSE_PYTHON:-}" python3.12 python3.13 python3; do
    [ -n "$c" ] || continue
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    c="$(pyenv root)/versions/$(pyenv versions --bare | grep -E '^3\.1[2-9]' | tail -n1)/bin/python3"
    [ -x "$c" ] && { echo "$c"; return 0; }
  fi
  return 1
}

# setup_venv EXTRAS: create .venv with Python >= 3.12 and install the project with EXTRAS.
setup_venv() {
  local extras="$1" py stamp
  if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)'; then
    py="$(find_python)" || die "Python 3.12 or newer is required (python3.12 not found). Install it (e.g. pyenv install 3.12) and retry."
    say "creating .venv with $("$py" --version)"
    rm -rf .venv
    "$py" -m venv .venv
  fi
  stamp=".venv/.installed-$extras-$(sha256sum pyproject.toml | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    say "installing dependencies ($extras)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[$extras]"
    touch "$stamp"
  fi
  build_accel
}

# build_accel: (re)build the masking engine's optional C accelerator when its sources
# changed since the last build (pip install -e builds it once; a pull may change them).
build_accel() {
  local so src
  so="$(ls proxy_worker/masking/_accel.*.so 2>/dev/null | head -n1 || true)"
  src="$(find setup.py proxy_worker/masking/_accel -newer "${so:-/nonexistent}" -type f 2>/dev/null | head -n1 || true)"
  if [ -n "$so" ] && [ -z "$src" ]; then
    return 0
  fi
  if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
    say "no C compiler: the masking accelerator is not built; masking runs in pure Python (slower on PII-dense bodies; Debian: apt-get install gcc)"
    return 0
  fi
  say "building the masking accelerator (C)"
  mkdir -p var
  .venv/bin/python -m pip install --quiet --no-deps -e . >var/accel-build.log 2>&1 \
    || say "the masking accelerator did not build (var/accel-build.log): masking runs in pure Python"
}

port_open() { # host port
  .venv/bin/python - "$1" "$2" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(); s.settimeout(1)
sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 1)
PY
}

ensure_postgres() {
  local host="${GATEHOUSE_DB_HOST:-127.0.0.1}" port="${GATEHOUSE_DB_PORT:-5432}"
  port_open "$host" "$port" && return 0
  if [ "$host" = "127.0.0.1" ] || [ "$host" = "localhost" ]; then
    if command -v pg_lsclusters >/dev/null 2>&1; then
      say "starting local PostgreSQL"
      local v
      for v in $(pg_lsclusters -h | awk '{print $1"/"$2}'); do
        pg_ctlcluster --skip-systemctl-redirect "${v%/*}" "${v#*/}" start 2>/dev/null || \
          pg_ctlcluster "${v%/*}" "${v#*/}" start || true
      done
    elif command -v pg_ctl >/dev/null 2>&1 && [ -n "${PGDATA:-}" ]; then
      say "starting local PostgreSQL ($PGDATA)"; pg_ctl -D "$PGDATA" -l "$ROOT/var/postgres.log" start || true
    fi
    for _ in $(seq 1 30); do port_open "$host" "$port" && return 0; sleep 0.5; done
  fi
  die "PostgreSQL is not reachable at $host:$port. Install it (Debian: apt-get install postgresql) or run 'docker compose up -d postgres redis', or set GATEHOUSE_DB_HOST/PORT/USER/PASSWORD."
}

ensure_redis() {
  local url="${GATEHOUSE_REDIS_URL:-redis://127.0.0.1:6379/0}" hostport host port
  hostport="${url#redis://}"; hostport="${hostport##*@}"; hostport="${hostport%%/*}"
  host="${hostport%%:*}"; port="${hostport##*:}"; [ "$port" = "$host" ] && port=6379
  port_open "$host" "$port" && return 0
  if { [ "$host" = "127.0.0.1" ] || [ "$host" = "localhost" ]; } && command -v redis-server >/dev/null 2>&1; then
    say "starting local Redis on port $port"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$port" --save "" --appendonly no >/dev/null
    for _ in $(seq 1 20); do port_open "$host" "$port" && return 0; sleep 0.25; done
  fi
  die "Redis is not reachable at $host:$port. Install it (Debian: apt-get install redis-server) or run 'docker compose up -d postgres redis', or set GATEHOUSE_REDIS_URL."
}
