#!/usr/bin/env bash
# The built image, from its own filesystem (podman image mount) and configuration (podman image
# inspect), as root on this machine where `podman run` is refused:
#   both:  every program and library in /opt/hgrn2 resolves its shared libraries inside the
#          image (ldd under chroot); a non-root user, the OCI labels, a health check, the entrypoint
#   cpu:   the entrypoint, run as the image's user in its working directory with its environment,
#          under chroot in a fresh network namespace (loopback only), serves: the image's
#          hgrn2-cli says SERVING, and a greedy Generate on the bundled demo model gives the text
#          hgrn2-run gives (when HGRN2_RUN names a built hgrn2-run) or at least some text; SIGTERM
#          then makes it exit 0.
# Usage: tests/deploy/image_test.sh cpu|cuda [IMAGE]     (scripts/build-image runs it)
set -uo pipefail
kind=${1:-}
[[ $kind == cpu || $kind == cuda ]] || { echo "usage: image_test.sh cpu|cuda [IMAGE]" >&2; exit 2; }
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
version=$(sed -n 's/^project(hgrn2-serve VERSION \([0-9.]*\).*/\1/p' "$root/CMakeLists.txt")
image=${2:-localhost/hgrn2-server:$version$([[ $kind == cpu ]] && echo -cpu)}
failures=0
passed=0
check() {
  if [[ $2 -eq 0 ]]; then
    echo "ok: $1"
    passed=$((passed + 1))
  else
    echo "FAIL: $1"
    failures=$((failures + 1))
  fi
}
finish() {
  echo "$passed passed, $failures failed"
  exit $((failures > 0))
}

podman image exists "$image" || { echo "no image $image: scripts/build-image $kind"; exit 1; }
mnt=$(podman image mount "$image") || { echo "podman image mount $image failed"; exit 1; }
trap 'podman image unmount "$image" >/dev/null' EXIT
inspect() { podman image inspect --format "$1" "$image"; }

# --- the configuration ----------------------------------------------------------------------------
user=$(inspect '{{.Config.User}}')
[[ $user == 10001:10001 ]]
check "runs as the numeric non-root user 10001:10001 ($user)" $?
entrypoint=$(inspect '{{json .Config.Entrypoint}}')
[[ $entrypoint == '["/opt/hgrn2/bin/hgrn2-server"]' ]]
check "the entrypoint is the server itself ($entrypoint)" $?
healthcheck=$(inspect '{{json .Config.Healthcheck.Test}}')
[[ $healthcheck == *hgrn2-cli*health* ]]
check "a health check runs hgrn2-cli health ($healthcheck)" $?
labels=$(inspect '{{json .Config.Labels}}')
for label in title description version revision; do
  [[ $labels == *"\"org.opencontainers.image.$label\":"* ]]
  check "OCI label org.opencontainers.image.$label" $?
done
revision=$(inspect '{{index .Config.Labels "org.opencontainers.image.revision"}}')
[[ $revision =~ ^[0-9a-f]{40}$ && $(cat "$mnt/etc/hgrn2-revision") == "$revision" ]]
check "the revision label is a commit, the one in /etc/hgrn2-revision ($revision)" $?
workdir=$(inspect '{{.Config.WorkingDir}}')
mapfile -t environment < <(inspect '{{range .Config.Env}}{{println .}}{{end}}' | sed '/^$/d')
[[ " ${environment[*]} " == *" HGRN2_DEVICE=$kind "* ]]
check "HGRN2_DEVICE=$kind in the image's environment" $?
[[ -s $mnt/opt/hgrn2/models/hgrn2-demo/model.safetensors && -d $mnt/$workdir/models/hgrn2-demo ]]
check "the demo model is the default: models/hgrn2-demo under the working directory $workdir" $?

# --- every binary's libraries resolve inside the image --------------------------------------------
objects=$(cd "$mnt" && find opt/hgrn2/bin opt/hgrn2/lib -type f \( -perm -u+x -o -name '*.so*' \))
unresolved=$(for o in $objects; do chroot "$mnt" /usr/bin/ldd "/$o" 2>&1 | sed "s|^|/$o: |"; done |
  grep -E 'not found|not a dynamic' || true)
[[ -n $objects && -z $unresolved ]]
check "ldd resolves every library of the $(wc -w <<<"$objects") programs and libraries in /opt/hgrn2 inside the image${unresolved:+: $unresolved}" $?
if [[ $kind == cuda ]]; then
  cuda_libs=$(chroot "$mnt" /usr/bin/ldd /opt/hgrn2/bin/hgrn2-server | grep -oE 'lib(cudart|cublas|cublasLt)\.so[^ ]* => /opt/hgrn2/lib/' | wc -l)
  [[ $cuda_libs == 3 ]]
  check "the server's CUDA runtime, cuBLAS and cuBLASLt come from the image's /opt/hgrn2/lib ($cuda_libs of 3)" $?
  finish
fi

# --- cpu: serve the demo model from the image's filesystem ----------------------------------------
out=$(mktemp -d)
# In a fresh mount and network namespace: /proc and /dev for the server, loopback only. The script
# runs inside it with bash from the host; the server and client run chrooted as the image's user.
unshare --mount --net --fork env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  MNT="$mnt" OUT="$out" WORKDIR="$workdir" USERSPEC="$user" ENVIRONMENT="${environment[*]}" \
  bash -s <<'EOF' >"$out/results" 2>&1
set -u
ip link set lo up
mount --bind /dev "$MNT/dev" && mount -t proc proc "$MNT/proc" && mount -t tmpfs tmpfs "$MNT/tmp"
in_image() {  # in_image COMMAND...: as the image's user, in its working directory and environment
  # shellcheck disable=SC2086  # ENVIRONMENT: one NAME=value a word
  exec chroot --userspec="$USERSPEC" "$MNT" /usr/bin/env -i $ENVIRONMENT HOME=/tmp \
    /bin/sh -c 'cd "$0" && exec "$@"' "$WORKDIR" "$@"
}
# Each in_image in a subshell that it replaces: the server's pid is $! (chroot, env and sh exec).
(in_image /opt/hgrn2/bin/hgrn2-server --port 50051 --metrics-port 9400 \
  --health-check-interval 0 --log-format json) 2>"$OUT/server.log" &
pid=$!
status=1
for ((i = 0; i < 1200; i++)); do
  if (in_image hgrn2-cli --addr 127.0.0.1:50051 --timeout 2 health) >"$OUT/health" 2>&1; then
    status=0
    break
  fi
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
echo "health $status $(cat "$OUT/health")"
(in_image hgrn2-cli --addr 127.0.0.1:50051 generate "Once upon a time" --max-new-tokens 16 \
  --temperature 0) >"$OUT/generated" 2>"$OUT/generate.err"
echo "generate $?"
(in_image hgrn2-cli --addr 127.0.0.1:50051 info --json) >"$OUT/info" 2>&1
[[ $(readlink "/proc/$pid/exe") == "$MNT/opt/hgrn2/bin/hgrn2-server" ]]
echo "exec $? $(readlink "/proc/$pid/exe")"
kill -TERM $pid
for ((i = 0; i < 200; i++)); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
kill -KILL $pid 2>/dev/null  # never left running past the test
wait $pid
echo "exit $?"
EOF
cat "$out/results"
grep -q '^health 0 SERVING' "$out/results"
check "the entrypoint serves, as user $user in $workdir: the image's hgrn2-cli health says SERVING" $?
[[ $(grep -c '"message":"serving' "$out/server.log") == 1 ]] && python3 -c '
import json, sys
for line in open(sys.argv[1]):
    record = json.loads(line)
    assert {"time", "level", "message"} <= record.keys(), record
' "$out/server.log"
check "its log is JSON lines (--log-format json), one of them the serving line" $?
python3 -c '
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
access = [r for r in records if r["message"] == "access" and r.get("method") == "Generate"]
assert len(access) == 1, access
assert access[0]["code"] == "OK" and access[0]["generated_tokens"] == 16, access
' "$out/server.log"
check "the Generate has its access log record (method Generate, code OK, 16 tokens)" $?
grep -q '"hgrn2-demo"\|hgrn2-demo' "$out/info"
check "it serves the bundled demo model ($(head -c 120 "$out/info"))" $?
generated=$(cat "$out/generated")
if [[ -n ${HGRN2_RUN:-} && -x ${HGRN2_RUN:-} ]]; then
  want=$("$HGRN2_RUN" --model "$root/models/hgrn2-demo" --prompt "Once upon a time" \
    --max-new-tokens 16 --temperature 0 2>/dev/null)
  grep -q '^generate 0' "$out/results" && [[ $generated == "$want" ]]
  check "a greedy Generate in the image equals hgrn2-run's text ($generated)" $?
else
  grep -q '^generate 0' "$out/results" && [[ -n $generated ]]
  check "a greedy Generate on the demo model gives text ($generated)" $?
fi
grep -q '^exec 0' "$out/results"
check "the entrypoint's process is the server itself (SIGTERM reaches it)" $?
grep -q '^exit 0' "$out/results"
check "SIGTERM: the server drains and exits 0" $?
((failures == 0)) || { echo "--- server log"; cat "$out/server.log"; cat "$out/generate.err"; }
rm -rf "$out"
finish
