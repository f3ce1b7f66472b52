"""Absorption on a real local Ray cluster (`ray start --head` on 127.0.0.1 with two worker CPUs, stopped at the
end), on the tiny model: jobs trained on workers, adapters committed by the driver into the registry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from servers import BIN, free_port

from lift_tool.errors import LiftError, ServerError
from lift_tool.lift import AbsorbResult, Lift

pytestmark = pytest.mark.integration

TOPICS = ["the Harrowgate archive", "the Lindqvist foundry", "the Marrow Bay ferry", "the Quillon lighthouse"]


def text_about(topic: str) -> str:
    return (f"This note is about {topic}. It was founded in 1871 by a family of engineers from the north. "
            f"Today {topic} employs forty people and opens to visitors every summer. ") * 6


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    port = free_port()
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                    "--num-cpus", "2", "--include-dashboard=false", "--object-store-memory", str(200 * 2**20),
                    "--temp-dir", str(temp)], check=True, env=env, capture_output=True, timeout=180)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        import ray

        ray.shutdown()
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)


def cluster_settings(tiny_settings, address: str, steps: int):
    training = tiny_settings.training.model_copy(update={"min_steps": steps})
    return tiny_settings.model_copy(update={"training": training, "cluster": tiny_settings.cluster.model_copy(
        update={"address": address, "max_retries": 1})})


def test_four_documents_absorbed_across_two_workers(ray_head, tiny_settings):
    lift = Lift(cluster_settings(tiny_settings, ray_head, steps=20))
    results = lift.absorb_many([text_about(topic) for topic in TOPICS])
    assert all(isinstance(result, AbsorbResult) for result in results), results
    entries = lift.documents()
    assert len(entries) == 4 and all(entry.route == "absorb" and len(entry.adapters) == 1 for entry in entries)
    assert lift.verify().ok
    for entry in entries:
        assert entry.adapters[0].manifest.doc_id == entry.doc_id
        assert entry.adapters[0].manifest.steps >= 20
    # Committed like a local absorption: the second time is a cache hit, trained nowhere.
    again = lift.absorb(text_about(TOPICS[0]))
    assert again.cached
    # The adapter answers: the pool activates it on the tiny model in this process.
    answer = lift.ask("When was the Harrowgate archive founded?", documents=[entries[0].doc_id], mode="lift")
    assert answer.mode == "lift"


def test_background_absorption_runs_on_the_cluster_and_can_be_cancelled(ray_head, tiny_settings):
    lift = Lift(cluster_settings(tiny_settings, ray_head, steps=20))
    job = lift.absorb_in_background(text_about("the Marrow Bay ferry") + " In the background.")
    assert job.wait(timeout=300).state == "done", job.error
    assert lift.absorption_status(job.doc_id).state == "absorbed"
    slow = Lift(cluster_settings(tiny_settings, ray_head, steps=5000))
    job = slow.absorb_in_background(text_about("the Quillon lighthouse") + " Cancelled.")
    time.sleep(5)
    slow.forget(job.doc_id)  # cancels the job first: it must not store the document again when it ends
    assert job.state == "cancelled"
    assert slow.registry.get_document(job.doc_id) is None and slow.verify().ok


def test_a_worker_killed_during_a_job_leaves_nothing_corrupt(ray_head, tiny_settings):
    lift = Lift(cluster_settings(tiny_settings, ray_head, steps=150))
    texts = [text_about(topic) + " Second edition." for topic in TOPICS]
    results: list = []
    run = threading.Thread(target=lambda: results.extend(lift.absorb_many(texts)))
    run.start()
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and run.is_alive() and time.monotonic() < deadline:
        for process in psutil.process_iter(["pid", "cmdline"]):
            if "ray::lift_absorb" in " ".join(process.info["cmdline"] or []):
                os.kill(process.info["pid"], signal.SIGKILL)
                killed = process.info["pid"]
                break
        time.sleep(0.5)
    run.join(timeout=900)
    assert killed is not None, "no job was seen running"
    assert not run.is_alive()
    assert len(results) == 4
    assert all(isinstance(result, (AbsorbResult, LiftError)) for result in results)
    assert lift.verify().ok  # nothing half-written
    for text, result in zip(texts, results):
        entry = lift.registry.get_document(lift.read(text).doc_id)
        assert entry is not None and lift.store.has_document(entry.doc_id)  # kept for retrieval either way
        assert (entry.route == "absorb") == isinstance(result, AbsorbResult)
    # The job whose worker was killed ran again (max_retries=1) on a new worker.
    assert sum(isinstance(result, AbsorbResult) for result in results) == 4


def test_a_cluster_that_cannot_be_reached_is_one_clear_error(tiny_settings, lift_home):
    lift = Lift(cluster_settings(tiny_settings, f"127.0.0.1:{free_port()}", steps=5))
    with pytest.raises(ServerError, match="cannot be reached.*unset LIFT_CLUSTER__ADDRESS"):
        lift.absorb(text_about("the Harrowgate archive"))
    assert lift.documents() == []
    doc = lift_home.parent / "doc.md"
    doc.write_text(text_about("the Lindqvist foundry"))
    cli = subprocess.run([str(Path(sys.executable).parent / "lift"), "absorb", str(doc), "--model",
                          str(tiny_settings.model), "--device", "cpu"], capture_output=True, text=True,
                         env={**os.environ, "LIFT_CLUSTER__ADDRESS": lift.settings.cluster.address})
    assert cli.returncode == 1 and cli.stderr.splitlines()[-1].startswith("lift: error: the Ray cluster"), cli.stderr
    assert not any((lift_home / "adapters").glob("*")) if (lift_home / "adapters").exists() else True
