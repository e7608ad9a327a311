#!/usr/bin/env bash
# The OpenAI-compatible API's raw bytes, as curl -N sees them: an event stream's header and
# framing ("data: ..." events, blank lines, "data: [DONE]" last), the same text as the whole
# answer, errors as JSON with their status, Expect: 100-continue, HTTP/1.0 (no chunking), /health
# and the request metrics; HTTPS with the gRPC port's TLS files and a client certificate (openssl
# makes them). Needs HGRN2_SERVER, HGRN2_CLI and HGRN2_TEST_DATA_DIR.
set -uo pipefail
# shellcheck source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
demo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)/models/hgrn2-demo

http_port=$(free_port)
metrics_port=$(free_port)
if ! start_server "$scratch/server.log" --model "$demo" --http-port "$http_port" \
  --metrics-port "$metrics_port"; then
  check "hgrn2-server starts with --http-port $http_port" 1
  finish
fi
url=http://127.0.0.1:$http_port
body='{"model": "hgrn2-demo", "prompt": "It is a truth universally acknowledged", "max_tokens": 12, "temperature": 0}'

curl -sN -i "$url/v1/completions" -H 'Content-Type: application/json' \
  -d "${body%\}}, \"stream\": true}" >"$scratch/stream.txt"
check "curl -N: a streamed completion" $?
tr -d '\r' <"$scratch/stream.txt" >"$scratch/stream.lf"
grep -qi '^content-type: text/event-stream' "$scratch/stream.lf" &&
  grep -qi '^transfer-encoding: chunked' "$scratch/stream.lf" &&
  grep -qi '^x-request-id: ' "$scratch/stream.lf"
check "the stream's header: text/event-stream, chunked, X-Request-Id" $?
curl -s "$url/v1/completions" -H 'Content-Type: application/json' -d "$body" >"$scratch/whole.json"
check "the same request, whole" $?
python3 - "$scratch/stream.lf" "$scratch/whole.json" <<'PY'
import json, sys
raw = open(sys.argv[1]).read()
events = raw.split("\n\n", 1)[1]  # after the header
blocks = [b for b in events.split("\n\n") if b]
assert all(b.startswith("data: ") and "\n" not in b for b in blocks), blocks[:3]
assert blocks[-1] == "data: [DONE]", blocks[-1]
chunks = [json.loads(b[6:]) for b in blocks[:-1]]
assert all(c["object"] == "text_completion" for c in chunks)
text = "".join(c["choices"][0]["text"] for c in chunks)
whole = json.load(open(sys.argv[2]))
assert text == whole["choices"][0]["text"] != "", (text, whole)
assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
print(f"{len(chunks)} events, text {text!r}")
PY
check "data: events, one JSON each, [DONE] last, joined text equal to the whole answer" $?

code=$(curl -s -o "$scratch/error.json" -w '%{http_code}' "$url/v1/completions" -d '{"prompt": ')
python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["error"]; assert e["param"] == "body" and e["type"] == "invalid_request_error", e' "$scratch/error.json"
[[ $? -eq 0 && $code == 400 ]]
check "bad JSON: 400 with an OpenAI error naming body ($code)" $?
code=$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/chat/completions" -X GET)
[[ $code == 405 ]]
check "GET on a POST route: 405 ($code)" $?

# A body over 1 KiB with Expect: 100-continue (curl then waits for the go-ahead).
long=$(python3 -c 'print("Elizabeth " * 300)')
code=$(curl -s -o "$scratch/long.json" -w '%{http_code}' -H 'Expect: 100-continue' \
  "$url/v1/completions" -d "{\"prompt\": \"$long\", \"max_tokens\": 2}")
[[ $code == 200 ]]
check "Expect: 100-continue: answered after the body ($code)" $?
curl -sN --http1.0 "$url/v1/completions" -d "${body%\}}, \"stream\": true}" >"$scratch/http10.txt"
[[ $(tail -c 15 "$scratch/http10.txt") == *"data: [DONE]"* ]]
check "HTTP/1.0: the stream without chunking, to the end" $?

[[ $(curl -s -o /dev/null -w '%{http_code}' "$url/health") == 200 ]]
check "GET /health: 200" $?
metrics=$(curl -sf "http://127.0.0.1:$metrics_port/metrics")
grep -q '^hgrn2_requests_total{code="OK",model_name="[^"]*",rpc="POST /v1/completions"} [3-9]' <<<"$metrics"
check "the HTTP calls are counted in hgrn2_requests_total by route" $?
grep -q '^hgrn2_requests_total{code="INVALID_ARGUMENT",model_name="[^"]*",rpc="POST /v1/completions"} 1' <<<"$metrics"
check "the refused one too, by its code" $?
for id in a b c; do curl -s -o /dev/null "$url/v1/models/$id"; done
metrics=$(curl -sf "http://127.0.0.1:$metrics_port/metrics")
grep -q '^hgrn2_requests_total{code="NOT_FOUND",model_name="[^"]*",rpc="GET /v1/models/{id}"} 3' <<<"$metrics"
check "a model id is no label value: GET /v1/models/{id} counted as its route" $?

# TLS with the gRPC port's files: HTTPS, and with --tls-client-ca a client certificate required.
if command -v openssl >/dev/null; then
  pki=$scratch/pki
  mkdir -p "$pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=hgrn2-test-ca -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
  for name in server client; do
    ext="subjectAltName=DNS:localhost,IP:127.0.0.1"
    [[ $name == client ]] && ext="extendedKeyUsage=clientAuth"
    echo "$ext" >"$pki/$name.ext"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$name" \
      -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null &&
      openssl x509 -req -days 2 -in "$pki/$name.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
        -CAcreateserial -extfile "$pki/$name.ext" -out "$pki/$name.pem" 2>/dev/null
  done
  tls_port=$(free_port)
  if start_server "$scratch/tls.log" --model "$data/tiny-a" --metrics-port 0 --http-port "$tls_port" \
    --tls-cert "$pki/server.pem" --tls-key "$pki/server.key" --tls-client-ca "$pki/ca.pem"; then
    code=$(curl -s -o "$scratch/tls.json" -w '%{http_code}' --cacert "$pki/ca.pem" \
      --cert "$pki/client.pem" --key "$pki/client.key" "https://127.0.0.1:$tls_port/v1/completions" \
      -d '{"prompt": [1, 2, 3], "max_tokens": 4, "ignore_eos": true}')
    [[ $code == 200 ]] && grep -q '"completion_tokens":4' "$scratch/tls.json"
    check "HTTPS with a client certificate: a completion ($code)" $?
    curl -s -o /dev/null --cacert "$pki/ca.pem" "https://127.0.0.1:$tls_port/health"
    [[ $? -ne 0 ]]
    check "HTTPS without a client certificate: refused in the handshake" $?
    curl -s -o /dev/null "http://127.0.0.1:$tls_port/health"
    [[ $? -ne 0 ]]
    check "plain HTTP on the TLS port: no answer" $?
  else
    check "hgrn2-server starts with TLS on its HTTP port" 1
  fi
fi
finish
