#!/usr/bin/env python3
"""Renders every overlay in deploy/k8s/overlays with `kubectl kustomize` and checks the output.

- Every built-in object validates strictly (unknown fields refused) against the Kubernetes JSON
  schemas of the oldest and newest versions we support (kubernetes-validate, offline).
- ServiceMonitor and PrometheusRule validate against tests/deploy/schemas (the Operator's CRD
  schemas are not shipped by any package we can install; their rule contents are checked by
  promtool in promtool_test.sh, and the PrometheusRule must equal the plain rules file).
- The deployment's promises: gRPC probes on the gRPC port (with TLS: hgrn2-cli health over TLS;
  TLS and API key files from mounted Secrets no one else may read), a grace period longer than
  the drain plus preStop, a non-root read-only container without capabilities, one GPU per pod exactly in
  GPU overlays, named Service ports, selectors that match the pods, a ServiceMonitor port that
  exists, HPA metrics that the Prometheus adapter exposes, and only HGRN2_* variables that
  hgrn2-server reads (each flag's, as server/flags.cc declares its flags).

Usage: validate_manifests.py KUBECTL     (run with the deploy tools' Python: .cache/deploy-tools)
Prints "ok: ..." / "FAIL: ..." lines and "N passed, N failed"; exits 1 on any failure.
"""
import json
import pathlib
import re
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]  # oldest and newest we validate against
CRD_SCHEMAS = json.loads((ROOT / "tests/deploy/schemas/monitoring.coreos.com-v1.json").read_text())

passed = 0
failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok: {name}")
    else:
        failed += 1
        print(f"FAIL: {name}{': ' + detail if detail else ''}")


def server_variables():
    """HGRN2_<FLAG> for every flag server/flags.cc declares (CLI11 reads each from its variable)."""
    text = (ROOT / "server/flags.cc").read_text()
    flags = re.findall(r'(?:add_option|add_flag|set_config)\(\s*"--([a-z0-9-]+)"', text)
    return {"HGRN2_" + flag.upper().replace("-", "_") for flag in flags}


def adapter_metric_names():
    values = yaml.safe_load((ROOT / "deploy/prometheus-adapter/values.yaml").read_text())
    return {rule["name"]["as"] for rule in values["rules"]["custom"]}


def crd_schema(kind):
    schema = dict(CRD_SCHEMAS[kind])
    schema["$defs"] = CRD_SCHEMAS["$defs"]
    return schema


def option(command, flag):
    """The value after FLAG in an argument list, or None."""
    return command[command.index(flag) + 1] if flag in command[:-1] else None


def selector_matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def check_overlay(overlay, kubectl, mapped_variables, adapter_metrics):
    name = overlay.name
    result = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True)
    check(f"{name}: kubectl kustomize renders", result.returncode == 0, result.stderr.strip())
    if result.returncode != 0:
        return
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    by_kind = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)

    for o in objects:
        label = f"{name}: {o['kind']}/{o['metadata']['name']}"
        if o["kind"] in ("ServiceMonitor", "PrometheusRule"):
            try:
                jsonschema.validate(o, crd_schema(o["kind"]))
                check(f"{label} validates (tests/deploy/schemas)", True)
            except jsonschema.ValidationError as e:
                check(f"{label} validates (tests/deploy/schemas)", False, e.message)
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(o, version, strict=True)
                check(f"{label} validates strictly against Kubernetes {version}", True)
            except Exception as e:  # ValidationError, SchemaNotFoundError
                message = getattr(e, "message", None) or str(e)
                path = "/".join(str(x) for x in getattr(getattr(e, "caught", e), "absolute_path", []))
                check(f"{label} validates strictly against Kubernetes {version}", False,
                      f"{path}: {message}"[:400])

    deployment = next(d for d in by_kind["Deployment"] if d["metadata"]["name"] == "hgrn2-server")
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    container = next(c for c in spec["containers"] if c["name"] == "server")
    config = next(c for c in by_kind["ConfigMap"] if c["metadata"]["name"].startswith("hgrn2-config"))
    env = config["data"]

    refs = [e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e]
    check(f"{name}: the container takes its flags from the generated ConfigMap {config['metadata']['name']}",
          refs == [config["metadata"]["name"]], str(refs))
    unknown = sorted(set(env) - mapped_variables)
    check(f"{name}: every ConfigMap variable is one hgrn2-server reads", not unknown, str(unknown))

    grpc_port = int(env["HGRN2_PORT"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    expected_ports = {"grpc": grpc_port, "metrics": int(env["HGRN2_METRICS_PORT"]),
                      "http": int(env["HGRN2_HTTP_PORT"])}
    check(f"{name}: container ports grpc, metrics and http equal HGRN2_PORT, HGRN2_METRICS_PORT "
          f"and HGRN2_HTTP_PORT {sorted(expected_ports.values())}",
          ports == expected_ports, str(ports))
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    tls = "HGRN2_TLS_CERT" in env
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = container.get(probe, {})
        if not tls:
            check(f"{name}: {probe} is a gRPC health probe on port {grpc_port}",
                  p.get("grpc", {}).get("port") == grpc_port and "httpGet" not in p and "exec" not in p, str(p))
            continue
        # The kubelet's gRPC probes have no TLS: hgrn2-cli health over TLS inside the container,
        # trusting the CA, with the pod's certificate when clients must present one.
        command = p.get("exec", {}).get("command", [])
        timing = {"periodSeconds", "timeoutSeconds", "failureThreshold", "initialDelaySeconds", "successThreshold"}
        ok = "exec" in p and set(p) - {"exec"} <= timing \
            and command[:1] == ["/opt/hgrn2/bin/hgrn2-cli"] and command[-1:] == ["health"] \
            and option(command, "--addr") == f"127.0.0.1:{grpc_port}" and option(command, "--tls-ca") \
            and option(command, "--tls-server-name")
        if "HGRN2_TLS_CLIENT_CA" in env:
            ok = ok and option(command, "--tls-cert") == env["HGRN2_TLS_CERT"] \
                and option(command, "--tls-key") == env["HGRN2_TLS_KEY"]
        check(f"{name}: {probe} runs hgrn2-cli health over TLS on port {grpc_port}", bool(ok), str(p))
    for variable in ("HGRN2_TLS_CERT", "HGRN2_TLS_KEY", "HGRN2_TLS_CLIENT_CA", "HGRN2_API_KEYS"):
        if variable in env:
            folder = env[variable].rsplit("/", 1)[0]
            secret = volumes.get(mounts.get(folder), {}).get("secret", {})
            check(f"{name}: {variable} is a file of a mounted Secret",
                  bool(secret.get("secretName")) and secret.get("defaultMode", 0o644) & 0o007 == 0,
                  f"{folder}: {secret}")
    startup = container["startupProbe"]
    check(f"{name}: the startup probe allows at least 5 minutes to load",
          startup["periodSeconds"] * startup["failureThreshold"] >= 300)

    drain = float(env["HGRN2_DRAIN_TIMEOUT"])
    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        sleep = float(pre_stop["sleep"]["seconds"])
    else:
        sleep = float(pre_stop["exec"]["command"][-1])
    grace = spec["terminationGracePeriodSeconds"]
    check(f"{name}: terminationGracePeriodSeconds {grace} > drain {drain:g} + preStop {sleep:g}",
          grace > drain + sleep)
    liveness = container["livenessProbe"]
    check(f"{name}: liveness tolerates NOT_SERVING for longer than a drain",
          liveness["periodSeconds"] * liveness["failureThreshold"] > drain)

    pod_security = spec.get("securityContext", {})
    security = container.get("securityContext", {})
    check(f"{name}: runAsNonRoot with a numeric user",
          pod_security.get("runAsNonRoot") is True and pod_security.get("runAsUser", 0) > 0)
    check(f"{name}: read-only root filesystem, no privilege escalation, capabilities dropped",
          security.get("readOnlyRootFilesystem") is True
          and security.get("allowPrivilegeEscalation") is False
          and security.get("capabilities", {}).get("drop") == ["ALL"])
    check(f"{name}: /tmp is a writable emptyDir", "emptyDir" in volumes.get(mounts.get("/tmp"), {}))

    limits = container["resources"].get("limits", {})
    gpu_overlay = name.startswith("gpu")
    if gpu_overlay:
        check(f"{name}: one GPU per pod (nvidia.com/gpu limit 1) and HGRN2_DEVICE=cuda",
              str(limits.get("nvidia.com/gpu")) == "1" and env.get("HGRN2_DEVICE") == "cuda", str(limits))
    else:
        check(f"{name}: no GPU asked for, HGRN2_DEVICE=cpu",
              "nvidia.com/gpu" not in limits and env.get("HGRN2_DEVICE") == "cpu", str(limits))

    if "HGRN2_SESSION_DIR" in env:
        mounted = env["HGRN2_SESSION_DIR"] in mounts
        claim = volumes.get(mounts.get(env["HGRN2_SESSION_DIR"]), {}).get("persistentVolumeClaim", {})
        claims = {c["metadata"]["name"] for c in by_kind.get("PersistentVolumeClaim", [])}
        check(f"{name}: the session directory is a mounted claim defined here",
              mounted and claim.get("claimName") in claims)
    if "redis" in env.get("HGRN2_SESSION_STORE", ""):
        url = env.get("HGRN2_REDIS_URL", "")
        services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
        match = re.fullmatch(r"redis://([a-z0-9-]+):(\d+)", url)
        ok = bool(match) and match.group(1) in services and int(match.group(2)) in [
            p["port"] for p in services[match.group(1)]["spec"]["ports"]]
        check(f"{name}: HGRN2_REDIS_URL {url} names a Service and port defined here", ok)

    labels = pod["metadata"]["labels"]
    main = next(s for s in by_kind["Service"] if s["metadata"]["name"] == "hgrn2-server")
    check(f"{name}: Service ports named grpc, metrics and http",
          {p["name"]: p["port"] for p in main["spec"]["ports"]} == expected_ports)
    for kind in ("Service", "PodDisruptionBudget"):
        for o in by_kind[kind]:
            if o["metadata"]["name"].startswith("hgrn2-server"):
                selector = o["spec"]["selector"]
                selector = selector.get("matchLabels", selector)
                check(f"{name}: {kind}/{o['metadata']['name']} selects the server's pods", selector_matches(selector, labels))
    check(f"{name}: the Deployment's selector matches its pods",
          selector_matches(deployment["spec"]["selector"]["matchLabels"], labels))

    for monitor in by_kind.get("ServiceMonitor", []):
        selected = [s for s in by_kind["Service"]
                    if selector_matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
        ports = [p["port"] for p in monitor["spec"]["endpoints"]]
        with_port = [s["metadata"]["name"] for s in selected
                     if all(any(p.get("name") == want for p in s["spec"]["ports"]) for want in ports)]
        check(f"{name}: the ServiceMonitor scrapes port {ports} of exactly one Service", with_port == ["hgrn2-server"], str(with_port))
    for rule in by_kind.get("PrometheusRule", []):
        plain = yaml.safe_load((ROOT / "deploy/prometheus/hgrn2-alerts.rules.yml").read_text())["groups"]
        check(f"{name}: PrometheusRule groups equal deploy/prometheus/hgrn2-alerts.rules.yml", rule["spec"]["groups"] == plain)

    for hpa in by_kind["HorizontalPodAutoscaler"]:
        target = hpa["spec"]["scaleTargetRef"]
        check(f"{name}: the HPA scales Deployment/hgrn2-server",
              target["kind"] == "Deployment" and target["name"] == "hgrn2-server")
        wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
        check(f"{name}: HPA metrics {sorted(wanted)} are exposed by the Prometheus adapter rules",
              wanted and wanted <= adapter_metrics, str(sorted(wanted - adapter_metrics)))
        check(f"{name}: the Deployment leaves replicas to the HPA", "replicas" not in deployment["spec"])


def check_session_affinity_examples():
    """deploy/k8s/examples/session-affinity: not applied by an overlay (their CRDs are the
    proxy's), but each parses, names what it is, and hashes on the metadata the clients send."""
    folder = K8S / "examples/session-affinity"
    for path in sorted(folder.glob("*.yaml")):
        try:
            objects = [o for o in yaml.safe_load_all(path.read_text()) if o]
        except yaml.YAMLError as e:
            check(f"{path.name} parses", False, str(e))
            continue
        named = all(("kind" in o and "metadata" in o) or "static_resources" in o for o in objects)
        check(f"{path.name} parses and names each object's kind", bool(objects) and named)
        check(f"{path.name} hashes on the session-id header", "session-id" in path.read_text())


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    kubectl = sys.argv[1]
    mapped = server_variables()
    check(f"hgrn2-server reads HGRN2_PORT, HGRN2_DEVICE, HGRN2_SESSION_STORE ({len(mapped)} variables, parsed)",
          {"HGRN2_PORT", "HGRN2_DEVICE", "HGRN2_SESSION_STORE", "HGRN2_CONFIG"} <= mapped and len(mapped) > 40,
          str(sorted(mapped)))
    overlays = sorted(p for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
    check("overlays gpu and cpu exist", {"gpu", "cpu"} <= {p.name for p in overlays})
    for overlay in overlays:
        check_overlay(overlay, kubectl, mapped, adapter_metric_names())
    check_session_affinity_examples()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
