"""The cluster files parse and carry what KubeRay, the Ray cluster launcher and `ray job submit` require.

The launcher config goes through Ray's own defaults merge and JSON-schema validation (what `ray up`
does before touching a cloud); the runtime_env through Ray's RuntimeEnv; the job config through our
own config model. KubeRay's CRD is not installable here, so the RayJob fields it requires (and the
ones it knows, to catch typos) are checked by name.
"""
from __future__ import annotations

import copy
import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

INFRA = REPO_ROOT / "infra"
RAYJOBS = ["rayjob.yaml", "rayjob-nightly.yaml"]

# RayJob v1 field names (KubeRay v1.1–v1.4); an unknown name is a typo the API server would drop or reject.
RAYJOB_SPEC = {"entrypoint", "runtimeEnvYAML", "jobId", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished",
               "activeDeadlineSeconds", "rayClusterSpec", "clusterSelector", "submissionMode", "submitterPodTemplate",
               "submitterConfig", "entrypointNumCpus", "entrypointNumGpus", "entrypointResources", "backoffLimit",
               "suspend", "managedBy", "deletionStrategy", "metadata"}
CLUSTER_SPEC = {"rayVersion", "enableInTreeAutoscaling", "autoscalerOptions", "headGroupSpec", "workerGroupSpecs",
                "headServiceAnnotations", "suspend", "managedBy", "gcsFaultToleranceOptions"}
HEAD_GROUP = {"rayStartParams", "template", "serviceType", "headService", "enableIngress"}
WORKER_GROUP = {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template", "scaleStrategy",
                "suspend", "numOfHosts", "idleTimeoutSeconds"}
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _load(name: str) -> dict:
    return yaml.safe_load((INFRA / name).read_text())


def _entrypoint_module(entrypoint: str) -> tuple[str, list[str]]:
    words = shlex.split(entrypoint)
    assert words[:2] == ["python", "-m"], f"entrypoint should be `python -m MODULE ...`: {entrypoint}"
    return words[2], words[3:]


def _containers(template: dict) -> list[dict]:
    containers = template["spec"]["containers"]
    assert containers and all(c.get("name") and c.get("image") for c in containers)
    return containers


@pytest.mark.parametrize("name", RAYJOBS)
def test_rayjob_manifest(name: str) -> None:
    job = _load(name)
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert DNS_1123.match(job["metadata"]["name"]) and len(job["metadata"]["name"]) <= 63
    spec = job["spec"]
    assert set(spec) <= RAYJOB_SPEC, set(spec) - RAYJOB_SPEC
    module, arguments = _entrypoint_module(spec["entrypoint"])
    assert module.startswith("jobs.") and importlib.util.find_spec(module) is not None, module
    assert arguments and arguments[0].startswith("s3://") and arguments[0].endswith(".yaml")
    assert spec.get("shutdownAfterJobFinishes") is True
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)
    assert spec.get("submissionMode", "K8sJobMode") in ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")

    cluster = spec["rayClusterSpec"]
    assert set(cluster) <= CLUSTER_SPEC, set(cluster) - CLUSTER_SPEC
    head = cluster["headGroupSpec"]
    assert set(head) <= HEAD_GROUP
    images = {c["image"] for c in _containers(head["template"])}
    # KubeRay's CRD types rayStartParams as map[string]string: a bare number fails validation.
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())

    gpu_groups = []
    for group in cluster["workerGroupSpecs"]:
        assert set(group) <= WORKER_GROUP, set(group) - WORKER_GROUP
        assert DNS_1123.match(group["groupName"])
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        for container in _containers(group["template"]):
            images.add(container["image"])
            limits = container.get("resources", {}).get("limits", {})
            if "nvidia.com/gpu" in limits:
                assert int(limits["nvidia.com/gpu"]) >= 1
                assert container["resources"]["requests"].get("nvidia.com/gpu") == limits["nvidia.com/gpu"]
                gpu_groups.append(group["groupName"])
    assert gpu_groups, "no worker group requests nvidia.com/gpu"
    assert len(images) == 1, f"head and workers must run the same image: {images}"


def test_cluster_launcher_config_passes_rays_validation() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load("cluster.yaml")
    validate_config(prepare_config(copy.deepcopy(config)))    # Ray's defaults merge + JSON schema, as `ray up`
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert any(t["resources"].get("GPU", 0) >= 1 and t["max_workers"] >= 1 for t in types.values())
    setup = config["setup_commands"]
    torch_step = next(i for i, command in enumerate(setup) if "torch" in command and "download.pytorch.org/whl/cu" in command)
    project_step = next(i for i, command in enumerate(setup) if "corpus-embed" in command and "pip install" in command)
    assert torch_step < project_step, "the CUDA torch build must be installed before the project"
    assert any("ray start --head" in command for command in config["head_start_ray_commands"])
    assert any("--address=$RAY_HEAD_IP:6379" in command for command in config["worker_start_ray_commands"])
    assert "~/corpus-embed" in config["file_mounts"]


def test_dockerfile_installs_cuda_torch_before_the_project() -> None:
    lines = [line.strip() for line in (INFRA / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert lines[0].startswith("ARG CUDA_IMAGE=nvidia/cuda:") and any(line.startswith("FROM ${CUDA_IMAGE}") for line in lines)
    runs = [i for i, line in enumerate(lines) if line.startswith("RUN")]
    torch_at = next(i for i in runs if "TORCH_SPEC" in lines[i] and "TORCH_INDEX_URL" in lines[i])
    project_at = next(i for i in runs if "pip install ." in lines[i])
    assert torch_at < project_at
    assert any(line.startswith("ARG TORCH_INDEX_URL=") and "download.pytorch.org/whl/cu" in line for line in lines)
    for folder in ("pipeline", "actors", "jobs"):
        assert any(line.startswith(f"COPY {folder} ") for line in lines), folder
    assert "wget" in (INFRA / "Dockerfile").read_text()   # KubeRay's probes run wget in the container
    ignored = (INFRA / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_runtime_env_is_valid_for_ray() -> None:
    from ray.runtime_env import RuntimeEnv

    data = _load("runtime_env.yaml")
    RuntimeEnv(**data)
    assert data["working_dir"] == "."
    assert {".venv", ".git"} <= set(data["excludes"])
    assert all(isinstance(value, str) for value in data.get("env_vars", {}).values())


def test_example_job_config_validates_and_maps_resources() -> None:
    from pipeline.config import parse_config

    config = parse_config(_load("job.yaml"))
    assert config.resources.actors == [1, 8] and config.resources.gpus_per_actor == 1
    assert config.output.path.startswith("s3://")


def test_docs_name_real_files_and_modules() -> None:
    text = (REPO_ROOT / "docs" / "cluster.md").read_text()
    for path in re.findall(r"infra/[\w.-]+", text):
        assert (REPO_ROOT / path).exists(), path
    for module in set(re.findall(r"python -m (jobs\.\w+)", text)):
        assert importlib.util.find_spec(module) is not None, module
    assert Path(INFRA / "local-s3.sh").exists()
