"""`ray job submit` (the CLI) against a real local Ray head runs jobs.embed_corpus as a cluster would.

Submitted exactly as docs/cluster.md says: from the repo root with ``--runtime-env
infra/runtime_env.yaml``, whose working dir is the checkout (minus the virtualenv and other big
folders), so the job and its actors import the uploaded code.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from tests.conftest import REPO_ROOT, demo_documents
from tests.jobs.ray_head import RayHead, _ray_bin

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def ray_head():
    head = RayHead(num_cpus=2)
    try:
        head.wait_ready()
        yield head
    finally:
        head.stop()


def _submit(head: RayHead, submission_id: str, *entrypoint: str) -> subprocess.CompletedProcess:
    command = [_ray_bin(), "job", "submit", "--address", head.dashboard, "--runtime-env", "infra/runtime_env.yaml",
               "--submission-id", submission_id, "--", *entrypoint]
    return subprocess.run(command, cwd=REPO_ROOT, env=head.env, capture_output=True, text=True, timeout=480)


def _status(head: RayHead, submission_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return str(JobSubmissionClient(head.dashboard).get_job_status(submission_id).value)


def _logs(head: RayHead, submission_id: str) -> list[str]:
    from ray.job_submission import JobSubmissionClient

    logs = JobSubmissionClient(head.dashboard).get_job_logs(submission_id)
    return [line for line in logs.splitlines() if line.strip()]


def test_submit_embed_corpus_job(ray_head: RayHead, tmp_path: Path) -> None:
    docs = demo_documents()[:32]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, chunk in (("a.jsonl", docs[:16]), ("b.jsonl", docs[16:])):
        (corpus / name).write_text("".join(json.dumps(doc) + "\n" for doc in chunk))
    output = tmp_path / "out"
    config = tmp_path / "job.yaml"
    config.write_text(f"input: {{path: {corpus}, id_field: id}}\noutput: {{path: {output}}}\n"
                      "resources: {actors: 1, cpus_per_actor: 0.5, batch_rows: 16}\n")

    done = _submit(ray_head, "ce-embed-ok", "python", "-m", "jobs.embed_corpus", str(config), "--quiet")
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert _status(ray_head, "ce-embed-ok") == "SUCCEEDED"
    logs = "\n".join(_logs(ray_head, "ce-embed-ok"))
    assert "[embed_corpus] ran on cluster at " in logs and "2 committed now" in logs

    table = ds.dataset(str(output), format="parquet").to_table()
    assert table.num_rows == 32
    assert sorted(table.column("id").to_pylist()) == sorted(doc["id"] for doc in docs)
    runs = list((output / "_runs").glob("*.json"))
    assert len(runs) == 1 and json.loads(runs[0].read_text())["ok"] is True

    # The nightly job on the same config: nothing left to embed, the index is built, and the job's
    # last log line is the JSON summary a scheduler reads.
    index = tmp_path / "index"
    done = _submit(ray_head, "ce-nightly", "python", "-m", "jobs.nightly_refresh", str(config), "--index", str(index))
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    report = json.loads(_logs(ray_head, "ce-nightly")[-1])
    assert report["ok"] and report["run"]["units_skipped"] == 2 and report["run"]["units_done"] == 0
    assert (report["index_update"]["fresh"], report["index_update"]["count"]) == (True, 32)


def test_failed_job_ends_with_its_reason(ray_head: RayHead, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(f"input: {{path: {tmp_path}}}\noutput: {{path: {tmp_path / 'out'}, granularity: paragraph}}\n")
    done = _submit(ray_head, "ce-embed-bad", "python", "-m", "jobs.embed_corpus", str(config))
    assert done.returncode != 0
    assert _status(ray_head, "ce-embed-bad") == "FAILED"
    last = _logs(ray_head, "ce-embed-bad")[-1]
    assert last.startswith("embed_corpus FAILED: invalid config") or "output.granularity" in last, last
