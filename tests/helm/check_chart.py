#!/usr/bin/env python3
"""Validate the Helm chart (helm/sfu) for real.

For the default values and for each documented option:
  * `helm lint --strict` and `helm template` with Helm itself;
  * every rendered manifest against the Kubernetes OpenAPI schemas
    (kubernetes-validate, strict: unknown fields are errors), except the
    ServiceMonitor, whose schema is the Prometheus operator's CRD;
  * what the option promises (per-pod NodePorts, host networking, TURN...).
Values that cannot work must make `helm template` fail with a message.
Finally the rendered pod command and configuration start the real server
binary (SFU_BIN): the StatefulSet's shell computes pod 2's advertised port,
and the server must come up healthy and advertise it.

Usage: HELM=... SFU_BIN=... python3 tests/helm/check_chart.py
(run inside a private network namespace: the server binds 0.0.0.0:8080).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

import kubernetes_validate
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "helm", "sfu")
HELM = os.environ.get("HELM", os.path.join(ROOT, "tests", "e2e", ".tools", "bin", "helm"))
SFU_BIN = os.environ.get("SFU_BIN", os.path.join(ROOT, "target", "release", "sfu"))
KUBERNETES_VERSIONS = ["1.29.0", "1.35.0"]
KEYS = ["--set", "apiKeys.k1=s1"]

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"  FAIL {what}")


def helm(*args):
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=60)


def render(args):
    out = helm("template", "r1", CHART, *args)
    if out.returncode != 0:
        raise RuntimeError(f"helm template {' '.join(args)} failed: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind, name=None):
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    if len(found) != 1:
        raise RuntimeError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


def pod_spec(docs):
    for kind in ("StatefulSet", "Deployment", "DaemonSet"):
        if by_kind(docs, kind):
            return one(docs, kind)["spec"]["template"]["spec"]
    raise RuntimeError("no workload rendered")


def env_of(docs):
    return {e["name"]: e for e in pod_spec(docs)["containers"][0]["env"]}


def config(docs):
    return one(docs, "ConfigMap", "r1-sfu")["data"]


def validate(name, docs):
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            spec = doc["spec"]
            check(spec["endpoints"][0]["port"] == "http" and spec["selector"]["matchLabels"],
                  f"{name}: ServiceMonitor selects the http port")
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                check(False, f"{name}: {doc['kind']} {doc['metadata']['name']} invalid for "
                             f"Kubernetes {version}: {e.message} at {list(e.path)}")


# name -> (helm args, assertions over the rendered documents)
def expect_default(d):
    sts = one(d, "StatefulSet")
    check(sts["spec"]["replicas"] == 1, "default: one replica")
    check("hostNetwork" not in sts["spec"]["template"]["spec"], "default: no host networking")
    media = one(d, "Service", "r1-sfu-media-0")
    ports = {p["protocol"]: p for p in media["spec"]["ports"]}
    check(media["spec"]["type"] == "NodePort", "default: media Service is a NodePort")
    check(ports["UDP"]["nodePort"] == 31000 and ports["TCP"]["nodePort"] == 31500,
          "default: pod 0 on UDP 31000 / TCP 31500")
    check(media["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == "r1-sfu-0",
          "default: media Service selects pod 0 only")
    check(config(d)["SFU_WORKERS"] == "1", "default: one worker per pod")
    check(env_of(d)["SFU_PUBLIC_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP",
          "default: advertises the node's IP")
    check(one(d, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1, "default: PDB")
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    check(annotations.get("prometheus.io/scrape") == "true", "default: scrape annotations")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    check(container["readinessProbe"]["httpGet"]["path"] == "/healthz", "default: readiness on /healthz")
    check(container["livenessProbe"]["httpGet"]["path"] == "/livez", "default: liveness on /livez")
    check(sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 60
          and config(d)["SFU_DRAIN_GRACE_SECS"] == "50", "default: 50 s drain inside a 60 s grace period")
    secret = one(d, "Secret")["stringData"]
    check("generated-api-key" in secret and "[api_keys]" in secret["sfu.toml"],
          "default: an API key pair is generated")


def expect_replicas(d):
    ports = sorted(one(d, "Service", f"r1-sfu-media-{i}")["spec"]["ports"][0]["nodePort"] for i in range(3))
    check(ports == [31000, 31001, 31002], f"replicas: one media port per pod, got {ports}")


def expect_host_network(kind):
    def f(d):
        w = one(d, kind)
        check(w["spec"]["template"]["spec"].get("hostNetwork") is True, f"{kind}: host networking")
        check(not [s for s in by_kind(d, "Service") if "media" in s["metadata"]["name"]],
              f"{kind}: no per-pod media Services")
        check(("replicas" in w["spec"]) == (kind == "Deployment"), f"{kind}: replicas only for a Deployment")
    return f


cases = {
    "default values (no API keys given)": ([], expect_default),
    "API keys given, 3 replicas": (KEYS + ["--set", "replicaCount=3"], expect_replicas),
    "hostNetwork DaemonSet": (KEYS + ["--set", "media.exposure=hostNetwork"], expect_host_network("DaemonSet")),
    "hostNetwork Deployment, 4 workers": (
        KEYS + ["--set", "media.exposure=hostNetwork", "--set", "media.hostNetwork.kind=Deployment",
                "--set", "media.workers=4"],
        lambda d: (expect_host_network("Deployment")(d),
                   check(config(d)["SFU_WORKERS"] == "4", "Deployment: 4 workers"))),
    "advertise stun": (KEYS + ["--set", "media.advertise=stun", "--set", "media.stunServer=stun.example.com:3478"],
                       lambda d: (check(config(d)["SFU_STUN_SERVER"] == "stun.example.com:3478", "stun: server set"),
                                  check("SFU_PUBLIC_IP" not in env_of(d), "stun: no hostIP"))),
    "advertise static": (KEYS + ["--set", "media.advertise=static", "--set", "media.publicIp=203.0.113.10"],
                         lambda d: check(config(d)["SFU_PUBLIC_IP"] == "203.0.113.10", "static: address set")),
    "per-pod LoadBalancer": (KEYS + ["--set", "media.perPodService.type=LoadBalancer"],
                             lambda d: check(one(d, "Service", "r1-sfu-media-0")["spec"]["type"] == "LoadBalancer"
                                             and "nodePort" not in one(d, "Service", "r1-sfu-media-0")["spec"]["ports"][0],
                                             "LoadBalancer: no fixed nodePort")),
    "no ICE-TCP": (KEYS + ["--set", "media.iceTcp=false"],
                   lambda d: check(len(one(d, "Service", "r1-sfu-media-0")["spec"]["ports"]) == 1
                                   and config(d)["SFU_ICE_TCP"] == "false", "no ICE-TCP: UDP only")),
    "ingress": (KEYS + ["--set", "ingress.enabled=true", "--set", "ingress.className=nginx",
                        "--set", "ingress.hosts[0].host=sfu.example.com",
                        "--set", "ingress.hosts[0].paths[0].path=/", "--set", "ingress.hosts[0].paths[0].pathType=Prefix",
                        "--set", "ingress.tls[0].secretName=sfu-tls", "--set", "ingress.tls[0].hosts[0]=sfu.example.com"],
                lambda d: check(one(d, "Ingress")["spec"]["rules"][0]["host"] == "sfu.example.com", "ingress rendered")),
    "ServiceMonitor, no scrape annotations": (
        KEYS + ["--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.podAnnotations=false"],
        lambda d: (check(len(by_kind(d, "ServiceMonitor")) == 1, "ServiceMonitor rendered"),
                   check("prometheus.io/scrape" not in one(d, "StatefulSet")["spec"]["template"]["metadata"]["annotations"],
                         "no scrape annotations"))),
    "external TURN": (KEYS + ["--set", "turn.urls[0]=turn:turn.example.com:3478", "--set", "turn.secret=ts"],
                      lambda d: (check(config(d)["SFU_TURN_URLS"] == "turn:turn.example.com:3478", "TURN URLs"),
                                 check('turn_secret = "ts"' in one(d, "Secret")["stringData"]["sfu.toml"], "TURN secret"))),
    "bundled coturn": (KEYS + ["--set", "turn.deploy=true", "--set", "turn.secret=ts",
                               "--set", "turn.coturn.externalHost=turn.example.com"],
                       lambda d: (check(one(d, "DaemonSet", "r1-sfu-coturn")["spec"]["template"]["spec"]["hostNetwork"],
                                        "coturn DaemonSet on the host network"),
                                  check("turn:turn.example.com:3478?transport=udp" in config(d)["SFU_TURN_URLS"],
                                        "coturn URL handed out"),
                                  check("--use-auth-secret" in one(d, "DaemonSet", "r1-sfu-coturn")["spec"]["template"]["spec"]["containers"][0]["args"],
                                        "coturn uses the REST-API secret"))),
    "existing Secret": (["--set", "existingSecret=my-sfu-secret"],
                        lambda d: (check(not by_kind(d, "Secret"), "existingSecret: no Secret rendered"),
                                   check(pod_spec(d)["volumes"][0]["secret"]["secretName"] == "my-sfu-secret",
                                         "existingSecret: mounted"))),
    "server settings": (KEYS + ["--set", "config.sessionTimeoutSecs=15", "--set", "config.maxRooms=50",
                                "--set", "config.httpRateLimit=0", "--set", "config.webhookUrls[0]=https://hooks.example.com/sfu",
                                "--set", "config.otlpEndpoint=http://otel-collector:4318"],
                        lambda d: check({k: config(d).get(k) for k in ("SFU_SESSION_TIMEOUT_SECS", "SFU_MAX_ROOMS",
                                                                       "SFU_HTTP_RATE_LIMIT", "SFU_WEBHOOK_URLS",
                                                                       "SFU_OTLP_ENDPOINT")}
                                        == {"SFU_SESSION_TIMEOUT_SECS": "15", "SFU_MAX_ROOMS": "50",
                                            "SFU_HTTP_RATE_LIMIT": "0", "SFU_WEBHOOK_URLS": "https://hooks.example.com/sfu",
                                            "SFU_OTLP_ENDPOINT": "http://otel-collector:4318"},
                                        "settings reach the ConfigMap")),
    "bundled Redis, 3 replicas": (KEYS + ["--set", "redis.deploy=true", "--set", "replicaCount=3"],
        lambda d: (check(config(d)["SFU_REDIS_URL"] == "redis://r1-sfu-redis:6379/0", "redis: bundled URL"),
                   check(config(d)["SFU_CLUSTER_FORWARD"] == "proxy", "redis: forward mode"),
                   check(one(d, "Service", "r1-sfu-redis")["spec"]["ports"][0]["port"] == 6379, "redis: Service"),
                   check(one(d, "Deployment", "r1-sfu-redis")["spec"]["template"]["metadata"]["labels"]
                         ["app.kubernetes.io/component"] == "redis", "redis: own pods"),
                   check("$(POD_IP)" in env_of(d).get("SFU_ADVERTISE_HTTP_URL", {}).get("value", ""),
                         "redis: pods advertise their address"),
                   check(env_of(d).get("SFU_RELAY_ADDR", {}).get("value") == "$(POD_IP)",
                         "redis: relays use the pod address"))),
    "external Redis, region": (KEYS + ["--set", "redis.url=rediss://redis.example.com:6380/1",
                                       "--set", "cluster.region=eu-west", "--set", "cluster.forward=redirect"],
        lambda d: (check(config(d)["SFU_REDIS_URL"] == "rediss://redis.example.com:6380/1", "redis: external URL"),
                   check(config(d)["SFU_REGION"] == "eu-west", "redis: region"),
                   check(config(d)["SFU_CLUSTER_FORWARD"] == "redirect", "redis: redirect"),
                   check(not by_kind(d, "Deployment"), "redis: nothing bundled"))),
    "Grafana dashboard": (KEYS + ["--set", "metrics.grafanaDashboard.enabled=true"],
                          lambda d: check(json.loads(one(d, "ConfigMap", "r1-sfu-dashboard")["data"]["sfu-overview.json"])["uid"]
                                          == "sfu-overview", "dashboard JSON in a ConfigMap")),
    "PDB off": (KEYS + ["--set", "podDisruptionBudget.enabled=false"],
                lambda d: check(not by_kind(d, "PodDisruptionBudget"), "PDB off")),
}

refusals = {
    "unknown exposure": (["--set", "media.exposure=magic"], "media.exposure must be"),
    "unknown host-network kind": (["--set", "media.exposure=hostNetwork", "--set", "media.hostNetwork.kind=Job"],
                                  "media.hostNetwork.kind must be"),
    "static without an address": (["--set", "media.advertise=static"], "media.publicIp is needed"),
    "unknown advertise": (["--set", "media.advertise=guess"], "media.advertise must be"),
    "unknown forward mode": (["--set", "redis.url=redis://r:6379", "--set", "cluster.forward=teleport"],
                             "cluster.forward must be"),
    "TURN without secret": (["--set", "turn.urls[0]=turn:x:3478"], "needs turn.secret"),
    "coturn without external host": (["--set", "turn.deploy=true", "--set", "turn.secret=ts"],
                                     "needs turn.coturn.externalHost"),
}


def start_rendered_server(docs, pod_name):
    """Run the pod's command with the rendered configuration; return (ok, log)."""
    spec = pod_spec(docs)
    container = spec["containers"][0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFU_")}
    env.update(config(docs))
    env["NO_COLOR"] = "1"
    workdir = tempfile.mkdtemp(prefix="sfu-chart-")
    toml = os.path.join(workdir, "sfu.toml")
    with open(toml, "w") as f:
        f.write(one(docs, "Secret")["stringData"]["sfu.toml"])
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP":
            env[e["name"]] = "127.0.0.1"  # stands in for the node's address
        elif e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name":  # POD_NAME, SFU_NODE_ID
            env[e["name"]] = pod_name
    env["SFU_CONFIG"] = toml
    command = [c.replace("/usr/local/bin/sfu", SFU_BIN) for c in container.get("command", [])]
    args = [a.replace("/usr/local/bin/sfu", SFU_BIN) for a in container.get("args", [])]
    argv = command + args if command else [SFU_BIN, *args]
    log_path = os.path.join(workdir, "server.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    healthy = False
    metrics = ""
    try:
        for _ in range(100):  # bounded: 10 s
            if proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen("http://127.0.0.1:8080/healthz", timeout=1) as r:
                    healthy = r.status == 200
                    break
            except OSError:
                time.sleep(0.1)
        if healthy:
            with urllib.request.urlopen("http://127.0.0.1:8080/metrics", timeout=2) as r:
                metrics = r.read().decode()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    with open(log_path) as f:
        return healthy, f.read(), metrics


def check_dashboard(docs, live_metrics):
    """The dashboard parses, and every metric it queries exists: in the live
    /metrics text, or (labelled metrics without a series yet) in the
    server's metric definitions."""
    cm = one(docs, "ConfigMap", "r1-sfu-dashboard")
    check(cm["metadata"]["labels"].get("grafana_dashboard") == "1", "dashboard: sidecar label")
    dash = json.loads(cm["data"]["sfu-overview.json"])
    with open(os.path.join(ROOT, "sfu", "src", "metrics.rs")) as f:
        defined = set(re.findall(r'"(sfu_[a-z_]+)"', f.read()))
    live = {line.split("{")[0].split(" ")[0] for line in live_metrics.splitlines() if line and not line.startswith("#")}
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    check(len(exprs) >= 14, f"dashboard: {len(exprs)} queries")
    for expr in exprs:
        for name in re.findall(r"\b((?:sfu|process)_[a-z_]+)", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            check(name in live or base in defined, f"dashboard queries {name}, which the server does not expose")


def main():
    lint = helm("lint", "--strict", CHART)
    check(lint.returncode == 0, f"helm lint --strict: {lint.stdout[-500:]}{lint.stderr[-500:]}")
    for name, (args, expect) in cases.items():
        print(f"== {name}")
        try:
            docs = render(args)
            validate(name, docs)
            expect(docs)
        except (RuntimeError, KeyError, IndexError, TypeError) as e:
            check(False, f"{name}: {type(e).__name__}: {e}")
    for name, (args, message) in refusals.items():
        print(f"== refuses {name}")
        out = helm("template", "r1", CHART, *KEYS, *args)
        check(out.returncode != 0 and message in out.stderr, f"refuses {name}: want {message!r}, got {out.stderr.strip()[-300:]}")

    print("== the rendered StatefulSet command starts the real server as pod 2")
    docs = render(KEYS + ["--set", "replicaCount=3", "--set", "metrics.grafanaDashboard.enabled=true"])
    healthy, log, metrics = start_rendered_server(docs, "r1-sfu-2")
    check(healthy, f"server healthy with the rendered configuration:\n{log[-1500:]}")
    check("advertised_addr=127.0.0.1:31002" in log, "pod 2 advertises its NodePort 31002")
    check("advertised_tcp_addr=Some(127.0.0.1:31502)" in log, "pod 2 advertises its ICE-TCP NodePort 31502")
    check('sfu_rooms{node="r1-sfu-2"} 0' in metrics, "metrics carry the pod's name as node")
    check("process_cpu_seconds_total" in metrics, "metrics include the process's CPU")
    check_dashboard(docs, metrics)
    print("== the rendered hostNetwork configuration starts the real server")
    healthy, log, _ = start_rendered_server(
        render(KEYS + ["--set", "media.exposure=hostNetwork", "--set", "media.workers=2"]), "r1-sfu-x")
    check(healthy, f"hostNetwork server healthy:\n{log[-1500:]}")
    check("advertised_addr=127.0.0.1:7883" in log, "second worker on the next port")

    if failures:
        print(f"\n{len(failures)} chart check(s) failed")
        return 1
    print(f"\nchart OK: lint, {len(cases)} renderings valid for Kubernetes {', '.join(KUBERNETES_VERSIONS)}, "
          f"{len(refusals)} refusals, the server starts with the rendered configuration")
    return 0


if __name__ == "__main__":
    sys.exit(main())
