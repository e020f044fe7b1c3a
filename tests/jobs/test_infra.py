"""The cluster files parse and carry what KubeRay, the Ray cluster launcher and `ray job submit` require.

The RayJob manifests are validated against KubeRay's own RayJob schema (vendored in
``tests/fixtures/kuberay/``, see its README), closed the way ``kubectl apply``'s strict field
validation closes it: a misspelled or unknown field, a number where a string is required, a missing
required field or a malformed quantity fails here as it would at the API server. The launcher config
goes through Ray's own defaults merge and JSON-schema validation (what `ray up` does before touching
a cloud); the runtime_env (and each RayJob's ``runtimeEnvYAML``) through Ray's RuntimeEnv; the job
config through our own config model.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import FIXTURES, REPO_ROOT

INFRA = REPO_ROOT / "infra"
RAYJOBS = ["rayjob.yaml", "rayjob-nightly.yaml"]
RAYJOB_SCHEMA = FIXTURES / "kuberay" / "rayjob-v1.schema.yaml"
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _closed(schema: Any) -> Any:
    """Every object schema with ``properties`` rejects other keys, unless it preserves unknown fields."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        for value in schema.values():
            _closed(value)
    elif isinstance(schema, list):
        for value in schema:
            _closed(value)
    return schema


@functools.cache
def _rayjob_validator() -> jsonschema.Draft7Validator:
    schema = _closed(copy.deepcopy(yaml.safe_load(RAYJOB_SCHEMA.read_text())["openAPIV3Schema"]))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _schema_errors(document: dict) -> list[str]:
    return sorted(f"{'.'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
                  for error in _rayjob_validator().iter_errors(document))


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
    from ray.runtime_env import RuntimeEnv

    job = _load(name)
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert _schema_errors(job) == []
    assert DNS_1123.match(job["metadata"]["name"]) and len(job["metadata"]["name"]) <= 63
    spec = job["spec"]
    module, arguments = _entrypoint_module(spec["entrypoint"])
    assert module.startswith("jobs.") and importlib.util.find_spec(module) is not None, module
    assert arguments and arguments[0].startswith("s3://") and arguments[0].endswith(".yaml")
    assert spec.get("shutdownAfterJobFinishes") is True
    RuntimeEnv(**yaml.safe_load(spec["runtimeEnvYAML"]))
    # submissionMode is a free string in the schema; these are the modes the operator knows.
    assert spec.get("submissionMode", "K8sJobMode") in ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")

    cluster = spec["rayClusterSpec"]
    images = {c["image"] for c in _containers(cluster["headGroupSpec"]["template"])}
    gpu_groups = []
    for group in cluster["workerGroupSpecs"]:
        assert DNS_1123.match(group["groupName"])
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


def _worker(job: dict) -> dict:
    return job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]


# What the API server would refuse: each edit of a valid manifest, and the error the schema gives.
BROKEN = {
    "misspelled spec field": (lambda job: job["spec"].update(shutdownAfterJobFinish=True),
                              "Additional properties are not allowed ('shutdownAfterJobFinish'"),
    "misspelled group field": (lambda job: _worker(job).update(rayStartParms={}), "'rayStartParms' was unexpected"),
    "number in rayStartParams": (lambda job: job["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]
                                 .update({"num-cpus": 0}), "0 is not of type 'string'"),
    "string backoffLimit": (lambda job: job["spec"].update(backoffLimit="2"), "'2' is not of type 'integer'"),
    "bad quantity": (lambda job: _worker(job)["template"]["spec"]["containers"][0]["resources"]["limits"]
                     .update(memory="48 GB"), "'48 GB' does not match"),
    "container without name": (lambda job: _worker(job)["template"]["spec"]["containers"][0].pop("name"),
                               "'name' is a required property"),
    "worker group without maxReplicas": (lambda job: _worker(job).pop("maxReplicas"),
                                         "'maxReplicas' is a required property"),
    "no entrypoint": (lambda job: job["spec"].pop("entrypoint"), "'entrypoint' is a required property"),
    "unknown upscaling mode": (lambda job: job["spec"]["rayClusterSpec"]["autoscalerOptions"]
                               .update(upscalingMode="Fast"), "'Fast' is not one of"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_rayjob_schema_refuses_what_the_api_server_would(case: str) -> None:
    edit, expected = BROKEN[case]
    job = copy.deepcopy(_load("rayjob.yaml"))
    edit(job)
    errors = _schema_errors(job)
    assert any(expected in error for error in errors), errors


def test_vendored_schema_names_its_source() -> None:
    data = yaml.safe_load(RAYJOB_SCHEMA.read_text())
    source = data["x-source"]
    assert source["repository"] == "ray-project/kuberay" and re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    readme = (RAYJOB_SCHEMA.parent / "README.md").read_text()
    assert source["commit"] in readme and source["path"] in readme


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
