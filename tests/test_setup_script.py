"""scripts/setup.sh picks the torch build from the machine: its plan (``--dry-run``) under a stand-in nvidia-smi."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def plan(tmp_path: Path, nvidia_smi: str | None, **overrides: str) -> tuple[list[tuple[str, str]], str]:
    """``([(requirement, index), ...] in the order tried, stamp path)`` as the dry run prints them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if nvidia_smi is not None:
        fake = bin_dir / "nvidia-smi"
        fake.write_text(f"#!/bin/sh\n{nvidia_smi}\n")
        fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORPUS_EMBED_TORCH")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", **overrides)
    out = subprocess.run(["bash", "scripts/setup.sh", "--dry-run"], cwd=REPO_ROOT, env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    tries = re.findall(r"would try: pip install '([^']+)'(?: --index-url (\S+))?", out)
    stamp = re.search(r"stamp (\S+)", out).group(1)
    return tries, stamp


NO_GPU = "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.' >&2; exit 9"
GPU = "echo 'GPU 0: NVIDIA H200 (UUID: GPU-00000000-0000-0000-0000-000000000000)'"


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="the CPU/CUDA choice is made on Linux")
def test_without_a_gpu_only_cpu_builds_are_tried_before_the_last_resort(tmp_path: Path) -> None:
    tries, _ = plan(tmp_path, NO_GPU)
    assert tries[:2] == [("torch==2.13.0+cpu", ""), ("torch==2.13.0+cpu", CPU_INDEX)]
    assert tries[2:] == [("torch==2.13.0", "")]  # the last resort, checked and warned about after install


def test_with_a_gpu_a_cuda_build_and_never_a_local_cpu_wheel(tmp_path: Path) -> None:
    tries, _ = plan(tmp_path, GPU)
    assert tries == [("torch==2.13.0+cu128", "https://download.pytorch.org/whl/cu128"),
                     ("torch==2.13.0,!=2.13.0+cpu", "")]


def test_overrides_are_used_as_given(tmp_path: Path) -> None:
    tries, _ = plan(tmp_path, GPU, CORPUS_EMBED_TORCH_INDEX=CPU_INDEX)
    assert tries == [("torch==2.13.0", CPU_INDEX)]
    tries, _ = plan(tmp_path, NO_GPU, CORPUS_EMBED_TORCH="/wheels/torch-2.13.0+cu126-cp311-linux_x86_64.whl")
    assert tries == [("/wheels/torch-2.13.0+cu126-cp311-linux_x86_64.whl", "")]


def test_the_stamp_follows_the_choice(tmp_path: Path) -> None:
    stamps = [plan(tmp_path, NO_GPU)[1], plan(tmp_path, GPU)[1],
              plan(tmp_path, NO_GPU, CORPUS_EMBED_TORCH_INDEX=CPU_INDEX)[1]]
    assert len(set(stamps)) == 3
    assert plan(tmp_path, NO_GPU)[1] == stamps[0]


def test_the_pin_matches_the_container_image() -> None:
    setup = (REPO_ROOT / "scripts" / "setup.sh").read_text()
    dockerfile = (REPO_ROOT / "infra" / "Dockerfile").read_text()
    version = re.search(r'^TORCH_VERSION="([^"]+)"', setup, re.M).group(1)
    cuda_tag = re.search(r'^CUDA_TAG="([^"]+)"', setup, re.M).group(1)
    assert f'ARG TORCH_SPEC="torch=={version}"' in dockerfile
    assert re.search(rf'^ARG TORCH_INDEX_URL=".*/whl/{cuda_tag}"', dockerfile, re.M)
