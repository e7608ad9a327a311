#!/usr/bin/env bash
# The image's entrypoint: maps HGRN2_* environment variables to hgrn2-server flags, appends the
# container's arguments (`args:` in Kubernetes, `docker run IMAGE --max-running 128`), and execs
# the server so that SIGTERM reaches it directly and its exit code is the container's.
# An argument overrides its variable: the server refuses a flag given twice, so a variable whose
# flag is among the arguments (`--port 6000` or `--port=6000`) is left out.
#
# An empty or unset variable passes no flag (the server's default applies). A first argument that
# is not a flag runs that command instead (`docker run IMAGE hgrn2-cli health`).
# HGRN2_ENTRYPOINT_DRY_RUN=1 prints the command, one word a line, instead of running it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")  # the install prefix: bin/, lib/, models/

if (($#)) && [[ $1 != -* ]]; then
  exec "$@"
fi

# VARIABLE:--flag, in the order of hgrn2-server --help.
mapping=(
  HGRN2_MODEL:--model
  HGRN2_HOST:--host
  HGRN2_PORT:--port
  HGRN2_METRICS_PORT:--metrics-port
  HGRN2_METRICS_HOST:--metrics-host
  HGRN2_DEVICE:--device
  HGRN2_DTYPE:--dtype
  HGRN2_STATE_DTYPE:--state-dtype
  HGRN2_MAX_RUNNING:--max-running
  HGRN2_NUM_SLOTS:--num-slots
  HGRN2_MAX_QUEUED:--max-queued
  HGRN2_PREFILL_TOKEN_BUDGET:--prefill-token-budget
  HGRN2_SWAP_SLOTS:--swap-slots
  HGRN2_MAX_PROMPT_TOKENS:--max-prompt-tokens
  HGRN2_MAX_NEW_TOKENS:--max-new-tokens
  HGRN2_DEFAULT_MAX_NEW_TOKENS:--default-max-new-tokens
  HGRN2_DRAIN_TIMEOUT:--drain-timeout
  HGRN2_HEALTH_CHECK_INTERVAL:--health-check-interval
  HGRN2_STREAM_THREADS:--stream-threads
  # Sessions.
  HGRN2_SESSION_STORE:--session-store
  HGRN2_SESSION_DIR:--session-dir
  HGRN2_REDIS_URL:--redis-url
  HGRN2_SESSION_TTL:--session-ttl
  # Transport security and API keys (deploy/k8s/components/tls, api-keys).
  HGRN2_TLS_CERT:--tls-cert
  HGRN2_TLS_KEY:--tls-key
  HGRN2_TLS_CLIENT_CA:--tls-client-ca
  HGRN2_API_KEYS:--api-keys
)

server=${HGRN2_SERVER_BIN:-$here/hgrn2-server}
# The bundled model is the default (the server's own default is relative to the working directory).
: "${HGRN2_MODEL:=$root/models/hgrn2-demo}"

given() {  # given FLAG: whether the arguments set FLAG
  local arg
  for arg in "${arguments[@]}"; do
    [[ $arg == "$1" || $arg == "$1="* ]] && return 0
  done
  return 1
}

arguments=("$@")
command=("$server")
for entry in "${mapping[@]}"; do
  variable=${entry%%:*}
  flag=${entry#*:}
  value=${!variable:-}
  if [[ -n $value ]] && ! given "$flag"; then
    command+=("$flag" "$value")
  fi
done
command+=("$@")

if [[ ${HGRN2_ENTRYPOINT_DRY_RUN:-0} == 1 ]]; then
  printf '%s\n' "${command[@]}"
  exit 0
fi
exec "${command[@]}"
