# shellcheck shell=bash
# Helpers shared by the test-server scripts in tests/servers/ (sourced, not run).

SERVERS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SERVERS_DIR/../.." && pwd)
# Debian's python3 carries boto3/psycopg2; a pyenv python3 earlier in PATH does not.
PY3=${CUSTODYFS_PYTHON:-/usr/bin/python3}
[ -x "$PY3" ] || PY3=python3

die() { echo "${0##*/}: $*" >&2; exit 1; }

# pid_alive PIDFILE -> 0 when the pid in PIDFILE is a live process
pid_alive() {
  local f=$1 p
  [ -s "$f" ] || return 1
  p=$(head -n1 "$f" 2>/dev/null) || return 1
  [[ $p =~ ^[0-9]+$ ]] || return 1
  kill -0 "$p" 2>/dev/null
}

# stop_pidfile PIDFILE [TIMEOUT_S]: TERM the process (and its process group when it
# leads one), wait bounded, then KILL. Idempotent; removes the pidfile.
stop_pidfile() {
  local f=$1 t=${2:-15} p i
  [ -s "$f" ] || { rm -f "$f"; return 0; }
  p=$(head -n1 "$f" 2>/dev/null)
  if [[ $p =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null; then
    if [ "$(ps -o pgid= -p "$p" 2>/dev/null | tr -d ' ')" = "$p" ]; then
      kill -TERM -- "-$p" 2>/dev/null || true
    else
      kill -TERM "$p" 2>/dev/null || true
    fi
    for ((i = 0; i < t * 10; i++)); do
      kill -0 "$p" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$p" 2>/dev/null; then
      kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    fi
  fi
  rm -f "$f"
}

# port_busy PORT -> 0 when something listens on 127.0.0.1:PORT
port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# http_up URL -> 0 when an HTTP server answers (any status)
http_up() {
  local code
  code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null) || true
  [ -n "$code" ] && [ "$code" != 000 ]
}

# buckets from arguments, else $CUSTODYFS_BUCKETS (space/comma separated), else the defaults
bucket_list() {
  if [ $# -gt 0 ]; then
    echo "$*"
  elif [ -n "${CUSTODYFS_BUCKETS:-}" ]; then
    echo "${CUSTODYFS_BUCKETS//,/ }"
  else
    echo "recepcao-raw storage-unique"
  fi
}

# make_buckets ENDPOINT KEY SECRET BUCKET... (idempotent, via boto3)
make_buckets() {
  local ep=$1 key=$2 secret=$3
  shift 3
  [ $# -gt 0 ] || return 0
  env -u AWS_CA_BUNDLE -u CURL_CA_BUNDLE -u REQUESTS_CA_BUNDLE -u AWS_PROFILE \
    "$PY3" "$SERVERS_DIR/s3ctl.py" --endpoint "$ep" --key "$key" --secret "$secret" \
    mkbucket "$@"
}
