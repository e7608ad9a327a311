#!/usr/bin/env bash
# hgrn2-server with mutual TLS and API keys as a process, driven by hgrn2-cli (and hgrn2-loadgen):
# the right client certificate and key get in, the wrong ones do not, health and reflection need
# no key; SIGHUP replaces the certificate (a client trusting only the new CA connects after it) and
# the keys; a bad new pair or keys file is refused and the old ones keep serving. Certificates are
# made by the openssl command. Needs HGRN2_SERVER, HGRN2_CLI, HGRN2_LOADGEN and HGRN2_TEST_DATA_DIR.
set -uo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
command -v openssl >/dev/null || { echo "no openssl command: skipped"; exit 77; }
loadgen=${HGRN2_LOADGEN:?}
pki=$scratch/pki
mkdir -p "$pki"

# make_ca NAME; issue CA NAME EXTENSION: EC P-256 keys, valid for two days.
make_ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=hgrn2-test-ca-$1" -keyout "$pki/$1-ca.key" -out "$pki/$1-ca.pem" 2>/dev/null
}
issue() {
  local ca=$1 name=$2
  echo "$3" >"$pki/$ca-$name.ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$ca-$name" \
    -keyout "$pki/$ca-$name.key" -out "$pki/$ca-$name.csr" 2>/dev/null &&
    openssl x509 -req -days 2 -in "$pki/$ca-$name.csr" -CA "$pki/$ca-ca.pem" \
      -CAkey "$pki/$ca-ca.key" -CAcreateserial -extfile "$pki/$ca-$name.ext" \
      -out "$pki/$ca-$name.pem" 2>/dev/null
}
for ca in a b c; do
  make_ca $ca && issue $ca server "subjectAltName=DNS:localhost,DNS:hgrn2-server,IP:127.0.0.1" &&
    issue $ca client "extendedKeyUsage=clientAuth"
  check "openssl makes CA $ca, its server and client certificates" $?
done

sha256() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
keys_file() {  # keys_file KEY: one tenant "acme" with that key
  printf '{"tenants": {"acme": {"max_concurrent_requests": 4}}, "keys": [{"sha256": "%s", "tenant": "acme"}]}\n' \
    "$(sha256 "$1")" >"$scratch/keys.json"
}

cp "$pki/a-server.pem" "$scratch/cert.pem"
cp "$pki/a-server.key" "$scratch/key.pem"
keys_file first-key
log=$scratch/server.log
metrics_port=$(free_port)
start_server "$log" --model "$data/tiny-a" --metrics-port "$metrics_port" --metrics-tls \
  --tls-cert "$scratch/cert.pem" --tls-key "$scratch/key.pem" --tls-client-ca "$pki/a-ca.pem" \
  --api-keys "$scratch/keys.json" ||
  { check "hgrn2-server starts with mutual TLS and API keys" 1; finish; }
# scrape CA CLIENT: /metrics over HTTPS trusting CA's certificate, with CLIENT's client
# certificate (none when "-"); the page on stdout.
scrape() {
  local certificate=()
  [[ $2 != - ]] && certificate=(--cert "$pki/$2-client.pem" --key "$pki/$2-client.key")
  curl -sf --max-time 5 --cacert "$pki/$1-ca.pem" "${certificate[@]}" \
    "https://127.0.0.1:$metrics_port/metrics"
}
page=$(scrape a a)
grep -q '^hgrn2_serving{model_name="tiny-a"} 1' <<<"$page"
check "--metrics-tls: /metrics over HTTPS with the gRPC port's certificate and client CA" $?
scrape a - >/dev/null
check "--metrics-tls with --tls-client-ca: a scrape without a client certificate is refused" $((!$?))
scrape a b >/dev/null
check "... and one with a certificate of another CA" $((!$?))
curl -sf --max-time 5 "http://127.0.0.1:$metrics_port/metrics" >/dev/null
check "... and a plaintext scrape" $((!$?))

# cli CA CLIENT_CA ARGS...: hgrn2-cli trusting CA's certificate, with CLIENT_CA's client
# certificate (none when "-"); stderr in $scratch/cli.err.
cli_as() {
  local ca=$1 client=$2
  shift 2
  local certificate=()
  [[ $client != - ]] && certificate=(--tls-cert "$pki/$client-client.pem" --tls-key "$pki/$client-client.key")
  "$cli" --addr "$server_addr" --timeout 5 --tls-ca "$pki/$ca-ca.pem" "${certificate[@]}" "$@" \
    2>"$scratch/cli.err"
}

out=$(cli_as a a --api-key first-key info --json)
check "mutual TLS with the right CA, client certificate and key: info" $?
[[ $out == *'"vocab_size":512'* ]]
check "info describes the model ($out)" $?
HGRN2_API_KEY=first-key cli_as a a generate --ids 1,2,3 --max-new-tokens 2 --print-ids >/dev/null
check "HGRN2_API_KEY is sent as the key: generate" $?
cli_as a a generate --ids 1,2,3 --max-new-tokens 2 >/dev/null
[[ $? == 1 ]] && grep -q 'UNAUTHENTICATED: no API key' "$scratch/cli.err"
check "no key: UNAUTHENTICATED ($(cat "$scratch/cli.err"))" $?
cli_as a a --api-key wrong-key info >/dev/null
[[ $? == 1 ]] && grep -q 'UNAUTHENTICATED: the API key is not recognized' "$scratch/cli.err" &&
  ! grep -q wrong-key "$scratch/cli.err" "$log"
check "a wrong key: UNAUTHENTICATED, the key shown nowhere" $?
[[ $(cli_as a a health) == SERVING ]]
check "health needs no key" $?
cli_as a a services | grep -q hgrn2.v1.Inference
check "server reflection needs no key" $?
[[ $(cli_as a a --tls-server-name localhost health) == SERVING ]]
check "--tls-server-name a name the certificate has" $?
cli_as a a --tls-server-name other.example health >/dev/null
[[ $? == 1 ]] && grep -q UNAVAILABLE "$scratch/cli.err"
check "--tls-server-name a name the certificate lacks: refused" $?
# The Kubernetes probe of deploy/k8s/components/tls, its paths mapped onto this test's: health over
# mutual TLS from inside the pod, presenting the server's own certificate.
probe=$(python3 - "$(dirname "${BASH_SOURCE[0]}")/../../deploy/k8s/components/tls/deployment-patch.yaml" <<'PY'
import json, re, sys
text = re.sub(r"#.*", "", open(sys.argv[1]).read())
print("\n".join(json.loads(re.search(r"command: (\[[^]]*\])", text).group(1))))
PY
)
mapfile -t probe <<<"$probe"
probe=("${probe[@]//\/opt\/hgrn2\/bin\/hgrn2-cli/$cli}")
probe=("${probe[@]//127.0.0.1:50051/$server_addr}")
probe=("${probe[@]//\/etc\/hgrn2\/tls\/ca.crt/$pki/a-ca.pem}")
probe=("${probe[@]//\/etc\/hgrn2\/tls\/tls.crt/$scratch/cert.pem}")
probe=("${probe[@]//\/etc\/hgrn2\/tls\/tls.key/$scratch/key.pem}")
[[ ${probe[0]} == "$cli" && $("${probe[@]}" 2>"$scratch/cli.err") == SERVING ]]
check "the tls component's Kubernetes probe passes (${probe[*]}: $(cat "$scratch/cli.err"))" $?
cli_as a - --api-key first-key info >/dev/null
[[ $? == 1 ]] && grep -q UNAVAILABLE "$scratch/cli.err"
check "no client certificate: refused" $?
cli_as a b --api-key first-key info >/dev/null
[[ $? == 1 ]] && grep -q UNAVAILABLE "$scratch/cli.err"
check "a client certificate of another CA: refused" $?
cli_as b a --api-key first-key info >/dev/null
check "a client trusting another CA: refused" $((!$?))
"$cli" --addr "$server_addr" --timeout 5 --api-key first-key info >/dev/null 2>&1
check "plaintext: refused" $((!$?))
loadgen_as() {
  "$loadgen" --addr "$server_addr" --tls-ca "$pki/a-ca.pem" --requests 4 --prompt-ids 4 \
    --output-tokens 2 --quiet "$@" >/dev/null 2>"$scratch/loadgen.err"
}
loadgen_as --tls-cert "$pki/a-client.pem" --tls-key "$pki/a-client.key" --api-key first-key
check "hgrn2-loadgen --tls-ca --tls-cert --tls-key --api-key" $?
loadgen_as --api-key first-key
check "hgrn2-loadgen without a client certificate: refused" $((!$?))

# wait_log PATTERN: until the server's log has PATTERN (10 s at most).
wait_log() {
  local i
  for ((i = 0; i < 100; i++)); do
    grep -q "$1" "$log" && return 0
    sleep 0.1
  done
  return 1
}
# answers_with CA: until a client trusting CA gets an answer (10 s at most).
answers_with() {
  local i
  for ((i = 0; i < 100; i++)); do
    cli_as "$1" a --api-key "$2" info >/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# --- SIGHUP: a new certificate (CA c) and new keys ---------------------------------------------------
cp "$pki/c-server.pem" "$scratch/cert.pem"
cp "$pki/c-server.key" "$scratch/key.pem"
keys_file second-key
kill -HUP "$server_pid"
wait_log "TLS reloaded: certificate CN = c-server" && wait_log "API keys reloaded"
check "SIGHUP: the log says what was reloaded" $?
answers_with c second-key
check "after SIGHUP a client trusting only the new CA connects, with the new key" $?
page=$(scrape c a)
grep -q '^hgrn2_serving{model_name="tiny-a"} 1' <<<"$page"
check "after SIGHUP /metrics presents the new certificate too (a scrape trusting only CA c)" $?
scrape a a >/dev/null
check "... and no longer the old one" $((!$?))
cli_as a a --api-key second-key info >/dev/null
check "a client trusting only the old CA no longer does" $((!$?))
cli_as c a --api-key first-key info >/dev/null
[[ $? == 1 ]] && grep -q UNAUTHENTICATED "$scratch/cli.err"
check "the old key is refused after the reload" $?

# --- SIGHUP with a key that is not the certificate's, and a broken keys file ---------------------------
cp "$pki/a-server.pem" "$scratch/cert.pem"  # key.pem is still c's
echo '{"tenants": {}}' >"$scratch/keys.json"
kill -HUP "$server_pid"
wait_log "TLS reload refused, still serving the previous certificate: .*does not belong" &&
  wait_log "API keys reload refused, the previous keys stay in force: .*tenants"
check "a bad pair and a bad keys file: refused, logged" $?
sleep 1.5  # one refresh of the file watcher (1 s): what it serves must still be c's
cli_as c a --api-key second-key info >/dev/null
check "the previous certificate and keys still serve" $?
scrape c a >/dev/null
check "... on /metrics too" $?
kill -0 "$server_pid"
check "the server is still running" $?
finish
