#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/kubernetes (or the directory
# given as $1) against the Kubernetes OpenAPI schemas, offline.
#
#   scripts/validate-k8s.sh [DIR]        (make validate-k8s)
#
# - Installs kubernetes-validate (pinned) from PyPI with pip if it is missing.
#   Its wheel bundles the JSON schemas of every Kubernetes minor it supports,
#   so validation itself reads no network.
# - Validates every resource in every *.yaml under DIR in strict mode
#   (unknown fields are errors) against each bundled Kubernetes minor from
#   K8S_MIN (the oldest the manifests support) to the newest bundled one. A
#   resource whose kind has no schema (a typo in kind or apiVersion), a YAML
#   duplicate key or any other problem is an error, not a warning.
# - kubectl/kustomize are not needed: the kustomization.yaml files may hold
#   only a plain `resources:` list (anything else is rejected), so what
#   `kubectl apply -k` renders is exactly the listed files, which are the ones
#   validated. Each kustomization must list every manifest beside it.
# - Per kustomization (the resources one `kubectl apply -k` applies), checks
#   the references the schemas cannot see: names unique, namespace, config
#   map, service account, Service and PodDisruptionBudget selectors and
#   target ports, the security context and probes the deployment promises,
#   and that the settings.ini in each ConfigMap parses, uses only sections and
#   keys of the repository's settings.ini and listens on the containerPort.
# - Runs each ConfigMap's settings.ini through `dnsproxy check` (every value
#   validated as the proxy would at start, with an empty environment), using
#   $DNSPROXY_BIN or target/x86_64-unknown-linux-musl/release/dnsproxy (`make
#   build-host`; `make test` builds it first). Without a binary that step is
#   skipped with a note, unless REQUIRE_DNSPROXY_CHECK=1.
# - Custom resources (the Prometheus Operator's ServiceMonitor) have no schema
#   in kubernetes-validate: they are validated against the schema vendored in
#   scripts/k8s-schemas/ (jsonschema, strict), and a ServiceMonitor must select
#   a Service of these manifests that has the ports it scrapes. The metrics
#   containerPort must match METRICS_LISTEN (pod env) or metrics_listen.
# - Grafana dashboards (*.json under DIR) must parse, and every metric their
#   queries use must be one dnsproxy exports (METRICS below: the exporter's
#   names, as in the README's metrics table).
#
# Exit status: 0 when everything passes, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${1:-deploy/kubernetes}
KV_VERSION=${KV_VERSION:-1.37.0} # kubernetes-validate on PyPI
K8S_MIN=${K8S_MIN:-1.30}         # preStop `sleep` needs 1.30
PYTHON=${PYTHON:-python3}
VENV=${VALIDATE_K8S_VENV:-${TARGET_DIR:-target}/validate-k8s-venv}

have_kv() {
	"$1" -c 'import sys, kubernetes_validate.version as v; sys.exit(v.__version__ != sys.argv[1])' \
		"$KV_VERSION" 2>/dev/null
}

if ! have_kv "$PYTHON"; then
	if [ -x "$VENV/bin/python" ] && have_kv "$VENV/bin/python"; then
		PYTHON=$VENV/bin/python
	else
		echo "validate-k8s: installing kubernetes-validate==$KV_VERSION"
		if ! "$PYTHON" -m pip install --quiet --disable-pip-version-check \
			"kubernetes-validate==$KV_VERSION"; then
			# e.g. a system Python that refuses pip installs (PEP 668)
			"$PYTHON" -m venv "$VENV"
			"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
				"kubernetes-validate==$KV_VERSION"
			PYTHON=$VENV/bin/python
		fi
		have_kv "$PYTHON" || {
			echo "validate-k8s: kubernetes-validate $KV_VERSION not importable" >&2
			exit 1
		}
	fi
fi

DNSPROXY_BIN=${DNSPROXY_BIN:-target/x86_64-unknown-linux-musl/release/dnsproxy}
export DNSPROXY_BIN REQUIRE_DNSPROXY_CHECK=${REQUIRE_DNSPROXY_CHECK:-0}

exec "$PYTHON" - "$DIR" "$K8S_MIN" settings.ini scripts/k8s-schemas <<'PY'
import configparser
import json
import os
import re
import subprocess
import sys
import tempfile

import jsonschema
import yaml
from kubernetes_validate import utils as kv
from kubernetes_validate.version import __version__ as kv_version

root, k8s_min, reference_ini, crd_dir = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
errors = []

# The metrics dnsproxy exports (name -> type), the contract between the
# exporter, `dnsproxy top` and the dashboard.
METRICS = {
    "dnsproxy_build_info": "gauge",
    "dnsproxy_component_restarts_total": "counter",
    "dnsproxy_queries_total": "counter",
    "dnsproxy_answer_duration_seconds": "histogram",
    "dnsproxy_inflight": "gauge",
    "dnsproxy_tcp_clients": "gauge",
    "dnsproxy_refusals_total": "counter",
    "dnsproxy_drops_total": "counter",
    "dnsproxy_truncated_total": "counter",
    "dnsproxy_upstream_queries_total": "counter",
    "dnsproxy_upstream_responses_total": "counter",
    "dnsproxy_upstream_rtt_seconds": "histogram",
    "dnsproxy_upstream_failures_total": "counter",
    "dnsproxy_upstream_up": "gauge",
    "dnsproxy_upstream_connections": "gauge",
    "dnsproxy_upstream_waiting": "gauge",
    "dnsproxy_upstream_window": "gauge",
    "dnsproxy_upstream_certificate_not_after_seconds": "gauge",
    "dnsproxy_upstream_pin_warning": "gauge",
}

# Vendored schemas of custom resources: (apiVersion, kind) -> JSON schema.
CRD_SCHEMAS = {}
for name in sorted(os.listdir(crd_dir)):
    if name.endswith(".json"):
        with open(os.path.join(crd_dir, name)) as f:
            sch = json.load(f)
        api = sch["properties"]["apiVersion"]["const"]
        CRD_SCHEMAS[(api, sch["properties"]["kind"]["const"])] = sch


def err(where, msg):
    errors.append(f"{where}: {msg}")


class Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (the API server does too)."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load(path):
    with open(path) as f:
        return [d for d in yaml.load_all(f, Loader=Loader) if d is not None]


def mm(v):
    return tuple(int(x) for x in v.split(".")[:2])


def minor(v):
    return ".".join(v.split(".")[:2])


if not os.path.isdir(root):
    sys.exit(f"validate-k8s: no directory {root}")
versions = sorted({v for v in kv.all_versions() if mm(v) >= mm(k8s_min)}, key=mm)
if not versions:
    sys.exit(f"validate-k8s: kubernetes-validate {kv_version} bundles nothing >= {k8s_min}")

# --- every manifest, strict schemas ------------------------------------------
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root)
               for f in fs if f.endswith((".yaml", ".yml")))
kustomizations = [f for f in files if os.path.basename(f) in ("kustomization.yaml", "kustomization.yml")]
manifests = [os.path.normpath(f) for f in files if f not in kustomizations]
if not manifests:
    err(root, "no manifests found")
docs = {}  # path -> [resource]
for path in manifests:
    try:
        docs[path] = load(path)
    except Exception as e:
        err(path, f"YAML: {e}")
        continue
    if not docs[path]:
        err(path, "no resource in file")
    for res in docs[path]:
        if not isinstance(res, dict) or not {"apiVersion", "kind", "metadata"} <= res.keys():
            err(path, "not a Kubernetes resource (apiVersion, kind, metadata)")
            continue
        what = f"{res['kind']}/{res['metadata'].get('name')}"
        crd = CRD_SCHEMAS.get((res["apiVersion"], res["kind"]))
        if crd is not None:
            for e in sorted(jsonschema.Draft7Validator(crd).iter_errors(res), key=str):
                at = ".".join(str(p) for p in e.absolute_path) or "(top)"
                err(path, f"{what}: {at}: {e.message} (scripts/k8s-schemas)")
            continue
        failed = {}  # message -> the Kubernetes minors it fails on
        for v in versions:
            try:
                kv.validate(res, v, strict=True)
                continue
            except kv.ValidationError as e:
                msg = f"{'.'.join(str(p) for p in e.path) or '(top)'}: {e.message}"
            except kv.SchemaNotFoundError:
                msg = f"no schema for apiVersion {res['apiVersion']} kind {res['kind']}"
            except Exception as e:
                msg = f"{type(e).__name__}: {e}"
            failed.setdefault(msg, []).append(minor(v))
        for msg, vs in failed.items():
            on = vs[0] if len(vs) == 1 else f"{vs[0]} to {vs[-1]}"
            err(path, f"{what}: Kubernetes {on}: {msg}")

# --- kustomizations: plain resource lists ------------------------------------
def render(kpath, stack=()):
    """The manifest files `kubectl apply -k dirname(kpath)` applies."""
    if kpath in stack:
        err(kpath, "kustomization cycle")
        return []
    try:
        (k,) = load(kpath)
    except Exception as e:
        err(kpath, f"YAML: {e}")
        return []
    extra = set(k) - {"apiVersion", "kind", "resources"}
    if extra:
        err(kpath, f"only a plain `resources:` list is validated; remove {sorted(extra)}")
    if k.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or k.get("kind") != "Kustomization":
        err(kpath, "expected apiVersion kustomize.config.k8s.io/v1beta1, kind Kustomization")
    out, here = [], os.path.dirname(kpath)
    listed = set()
    for entry in k.get("resources") or []:
        if not isinstance(entry, str) or "://" in entry or os.path.isabs(entry):
            err(kpath, f"resource {entry!r}: only relative local paths")
            continue
        target = os.path.normpath(os.path.join(here, entry))
        listed.add(target)
        sub = os.path.join(target, "kustomization.yaml")
        if os.path.isdir(target) and os.path.isfile(sub):
            out += render(sub, stack + (kpath,))
        elif os.path.isfile(target) and target in manifests:
            out.append(target)  # a YAML error in it is reported above
        elif os.path.isfile(target):
            err(kpath, f"resource {entry!r} is not a *.yaml manifest")
        else:
            err(kpath, f"resource {entry!r} does not exist")
    for f in manifests:
        if os.path.dirname(f) == os.path.normpath(here) and f not in listed:
            err(kpath, f"{os.path.basename(f)} is beside it but not listed")
    return out


ref = configparser.ConfigParser(interpolation=None, strict=True)
ref.read(reference_ini)
ref_keys = {s: set(ref[s]) for s in ref.sections()}


def check_settings(where, text, ports, metrics_ports, metrics_env, env):
    ini = configparser.ConfigParser(interpolation=None, strict=True)
    try:
        ini.read_string(text)
    except configparser.Error as e:
        err(where, f"settings.ini: {e}".replace("\n", " "))
        return
    for s in ini.sections():
        base = "TLS_SERVER" if s.startswith("TLS_SERVER ") else s
        if base not in ref_keys:
            err(where, f"settings.ini: unknown section [{s}]")
            continue
        for key in set(ini[s]) - ref_keys[base]:
            err(where, f"settings.ini: unknown key {key} in [{s}]")
    port = ini.get("LOCAL_SERVER", "local_port", fallback="") or "53"
    for p in ports:
        if str(p) != port:
            err(where, f"settings.ini local_port {port} but the containerPort is {p}")
    # The metrics listener: the pod's METRICS_LISTEN, else metrics_listen of
    # any section; a `metrics` containerPort needs one on the same port.
    listen = metrics_env
    if listen is None:
        listen = next((ini[s]["metrics_listen"] for s in ini.sections()
                       if "metrics_listen" in ini[s]), "")
    listen_port = listen.rsplit(":", 1)[-1] if ":" in listen else ""
    for p in metrics_ports:
        if str(p) != listen_port:
            err(where, f"metrics containerPort {p} but METRICS_LISTEN/metrics_listen is {listen!r}")
    dnsproxy_check(where, text, env)


dnsproxy_bin = os.path.abspath(os.environ["DNSPROXY_BIN"])
dnsproxy_checked = []


def dnsproxy_check(where, text, env):
    """`dnsproxy check` on the settings and the container's literal env values."""
    if not os.access(dnsproxy_bin, os.X_OK):
        return
    with tempfile.TemporaryDirectory(prefix="validate-k8s-") as tmp:
        path = os.path.join(tmp, "settings.ini")
        with open(path, "w") as f:
            f.write(text)
        # Only what the pod sets: none of this machine's variables.
        run = subprocess.run([dnsproxy_bin, "check", "--config", path], cwd=tmp, env=env,
                             capture_output=True, text=True, timeout=30)
    if run.returncode != 0:
        err(where, f"dnsproxy check exited {run.returncode}: "
            + (run.stderr.strip() or run.stdout.strip()).replace(path, "settings.ini"))
    else:
        dnsproxy_checked.append(where)


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


with_workloads = set()


def check_variant(kpath, paths):
    res = [(p, r) for p in paths for r in docs.get(p, []) if isinstance(r, dict)]
    seen = set()
    for p, r in res:
        key = (r.get("apiVersion", "").split("/")[0], r["kind"], r["metadata"].get("namespace"),
               r["metadata"].get("name"))
        if key in seen:
            err(kpath, f"{p}: {r['kind']}/{key[3]} defined twice")
        seen.add(key)
    by_kind = lambda kind: [(p, r) for p, r in res if r["kind"] == kind]
    namespaces = {r["metadata"]["name"] for _, r in by_kind("Namespace")}
    names = lambda kind: {r["metadata"]["name"] for _, r in by_kind(kind)}
    workloads = by_kind("DaemonSet") + by_kind("Deployment")
    # An add-on without workloads (monitoring/) goes into the namespace a
    # variant created; a variant must create its own.
    known = namespaces if workloads else namespaces | all_namespaces
    for p, r in res:
        ns = r["metadata"].get("namespace")
        if r["kind"] != "Namespace" and ns not in known:
            err(kpath, f"{p}: namespace {ns!r} is not created by this kustomization"
                       + ("" if workloads else " nor by any other here"))
    for p, r in by_kind("ServiceMonitor"):
        check_service_monitor(f"{kpath}: {p}: ServiceMonitor/{r['metadata']['name']}", r)
    if not workloads:
        return
    with_workloads.add(kpath)
    pods = []
    for p, w in workloads:
        where = f"{kpath}: {p}: {w['kind']}/{w['metadata']['name']}"
        spec = w["spec"]
        tmpl = spec["template"]
        labels = tmpl["metadata"].get("labels", {})
        if not matches(spec["selector"].get("matchLabels"), labels):
            err(where, "selector does not match the pod template labels")
        ps = tmpl["spec"]
        pods.append((labels, ps))
        if ps.get("serviceAccountName") not in names("ServiceAccount"):
            err(where, f"service account {ps.get('serviceAccountName')!r} is not in this kustomization")
        if ps.get("automountServiceAccountToken") is not False:
            err(where, "automountServiceAccountToken must be false")
        if ps.get("enableServiceLinks") is not False:
            err(where, "enableServiceLinks must be false (Service variables could set LOCAL_PORT, TLS_PORT)")
        if "terminationGracePeriodSeconds" not in ps:
            err(where, "no terminationGracePeriodSeconds")
        if ps.get("hostNetwork") or ps.get("hostPID") or ps.get("hostIPC"):
            err(where, "host namespaces are not used")
        cms = {v["name"]: v["configMap"]["name"] for v in ps.get("volumes", []) if "configMap" in v}
        for c in ps["containers"]:
            cw = f"{where}: container {c['name']}"
            sc = {**ps.get("securityContext", {}), **c.get("securityContext", {})}
            want = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                    "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}
            for k, v in want.items():
                if sc.get(k) != v:
                    err(cw, f"securityContext.{k} must be {json.dumps(v)}")
            if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
                err(cw, "securityContext.capabilities must drop ALL and add none")
            if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                err(cw, "securityContext.seccompProfile.type must be RuntimeDefault")
            rq = c.get("resources", {})
            if not {"cpu", "memory"} <= set(rq.get("requests", {})) or "memory" not in rq.get("limits", {}):
                err(cw, "resources need cpu and memory requests and a memory limit")
            # Liveness and startup must not depend on an upstream (no --ready);
            # readiness normally has --ready (the node-local variant may drop it).
            for probe, ready_ok in (("livenessProbe", False), ("readinessProbe", True),
                                    ("startupProbe", False)):
                cmd = c.get(probe, {}).get("exec", {}).get("command", [])
                if cmd[:2] != ["/dnsproxy", "health"] or ("--ready" in cmd and not ready_ok):
                    err(cw, f"{probe} must be exec /dnsproxy health{'' if ready_ok else ' (without --ready)'} ...")
                elif c[probe].get("timeoutSeconds", 1) < 3:
                    err(cw, f"{probe}.timeoutSeconds must be >= 3 (the check's own timeout is 2 s)")
            for m in c.get("volumeMounts", []):
                if m["name"] in cms and not m.get("readOnly"):
                    err(cw, f"volume {m['name']} must be mounted read-only")
            ports = sorted({str(pt["containerPort"]) for pt in c.get("ports", [])
                            if pt.get("name", "").startswith("dns")})
            metrics_ports = sorted({str(pt["containerPort"]) for pt in c.get("ports", [])
                                    if pt.get("name") == "metrics"})
            metrics_env = next((e.get("value", "") for e in c.get("env", [])
                                if e.get("name") == "METRICS_LISTEN"), None)
            unnamed = [pt["containerPort"] for pt in c.get("ports", [])
                       if not pt.get("name", "").startswith("dns") and pt.get("name") != "metrics"]
            if unnamed:
                err(cw, f"container ports {unnamed} are neither dns* nor metrics")
            for vol, cm in cms.items():
                found = [r for _, r in by_kind("ConfigMap") if r["metadata"]["name"] == cm]
                if not found:
                    err(cw, f"config map {cm!r} is not in this kustomization")
                elif "settings.ini" in found[0].get("data", {}):
                    env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
                    check_settings(f"{cw}: ConfigMap/{cm}", found[0]["data"]["settings.ini"], ports,
                                   metrics_ports, metrics_env, env)
    for kind in ("Service", "PodDisruptionBudget"):
        for p, r in by_kind(kind):
            where = f"{kpath}: {p}: {kind}/{r['metadata']['name']}"
            sel = r["spec"].get("selector", {})
            sel = sel.get("matchLabels", sel) if kind == "PodDisruptionBudget" else sel
            targets = [ps for labels, ps in pods if matches(sel, labels)]
            if not targets:
                err(where, "selector matches no pod template of this kustomization")
            if kind != "Service":
                continue
            for sp in r["spec"].get("ports", []):
                tp, proto = sp.get("targetPort", sp["port"]), sp.get("protocol", "TCP")
                for ps in targets:
                    cports = [pt for c in ps["containers"] for pt in c.get("ports", [])]
                    if not any((pt.get("name") == tp or pt["containerPort"] == tp)
                               and pt.get("protocol", "TCP") == proto for pt in cports):
                        err(where, f"port {sp.get('name')}: no {proto} container port {tp!r}")


all_namespaces = {r["metadata"]["name"] for rs in docs.values() for r in rs
                  if isinstance(r, dict) and r.get("kind") == "Namespace"}
all_services = [r for rs in docs.values() for r in rs
                if isinstance(r, dict) and r.get("kind") == "Service"]


def check_service_monitor(where, sm):
    spec = sm.get("spec", {})
    sel = spec.get("selector", {}).get("matchLabels", {})
    ns_names = spec.get("namespaceSelector", {}).get("matchNames") or [sm["metadata"].get("namespace")]
    services = [s for s in all_services if s["metadata"].get("namespace") in ns_names
                and matches(sel, s["metadata"].get("labels", {}))]
    if not services:
        err(where, "selector matches no Service of these manifests")
    for ep in spec.get("endpoints", []):
        for svc in services:
            if ep.get("port") not in {sp.get("name") for sp in svc["spec"].get("ports", [])}:
                err(where, f"Service/{svc['metadata']['name']} has no port named {ep.get('port')!r}")


def check_dashboard(path):
    try:
        with open(path) as f:
            dash = json.load(f)
    except Exception as e:
        err(path, f"JSON: {e}")
        return 0
    exprs = []

    def walk(panels):
        for panel in panels:
            walk(panel.get("panels", []))
            for t in panel.get("targets", []):
                if not t.get("expr"):
                    err(path, f"panel {panel.get('title')!r}: a target without expr")
                exprs.append((panel.get("title"), t.get("expr", "")))

    walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        exprs.append((f"variable {v.get('name')}", q.get("query", "") if isinstance(q, dict) else q or ""))
    ids = [p.get("id") for p in dash.get("panels", [])]
    if len(ids) != len(set(ids)):
        err(path, "panel ids are not unique")
    for title, expr in exprs:
        for name in re.findall(r"\bdnsproxy_[a-z0-9_]+", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if METRICS.get(name) == "histogram":
                err(path, f"{title}: {name} is a histogram: query {name}_bucket, _sum or _count")
            elif name not in METRICS and METRICS.get(base) != "histogram":
                err(path, f"{title}: {name} is not a metric dnsproxy exports")
    return len(exprs)


for kpath in kustomizations:
    check_variant(kpath, render(kpath))

dashboards = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".json"))
dashboard_queries = {path: check_dashboard(path) for path in dashboards}

n_res = sum(len(d) for d in docs.values())
if not os.access(dnsproxy_bin, os.X_OK) and os.environ["REQUIRE_DNSPROXY_CHECK"] == "1":
    err(dnsproxy_bin, "no dnsproxy binary for `dnsproxy check` (make build-host)")
if errors:
    for e in dict.fromkeys(errors):
        print(f"ERROR {e}")
    print(f"validate-k8s: FAILED, {len(dict.fromkeys(errors))} error(s) (kubernetes-validate "
          f"{kv_version}, strict, Kubernetes {minor(versions[0])} to {minor(versions[-1])})")
    sys.exit(1)
for path in manifests:
    print(f"ok   {path}: " + ", ".join(f"{r['kind']}/{r['metadata']['name']}" for r in docs[path]))
for kpath in kustomizations:
    print(f"ok   {kpath}: " + ("references, security context, probes, settings.ini"
                             if kpath in with_workloads else "references"))
for path, n in dashboard_queries.items():
    print(f"ok   {path}: {n} queries, every metric one dnsproxy exports")
if dnsproxy_checked:
    print(f"ok   dnsproxy check: {len(dnsproxy_checked)} container(s)' settings.ini")
else:
    print(f"note dnsproxy check skipped: no binary at {dnsproxy_bin} (make build-host)")
print(f"validate-k8s: {n_res} resources in {len(manifests)} files and {len(kustomizations)} "
      f"kustomizations valid (kubernetes-validate {kv_version}, strict schemas of Kubernetes "
      + ", ".join(minor(v) for v in versions) + ")")
PY
