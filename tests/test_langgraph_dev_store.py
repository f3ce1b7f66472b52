"""LiftStore behind `langgraph dev`, as scripts/langgraph_dev_store.py shows it: the server started on 127.0.0.1
with langgraph.json's store, a langgraph_sdk client putting, searching and deleting items, the memory graph
answering from the store, a long document absorbed in the background, a routing's progress streamed; then the
server stopped. On the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(400)
def test_langgraph_dev_serves_lift_store(tiny_model_dir, tmp_path):
    pytest.importorskip("langgraph_api", reason="langgraph dev needs langgraph-cli[inmem] (pip install 'lift-tool[dev]')")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LIFT_HOME": str(tmp_path / "home"),
           "LIFT_CACHE_DIR": str(tmp_path / "cache"), "LIFT_MODEL": str(tiny_model_dir), "LIFT_DEVICE": "cpu",
           "LIFT_MAX_NEW_TOKENS": "8", "LIFT_TRAINING__EPOCHS": "0.05", "LIFT_TRAINING__MIN_STEPS": "1",
           "LIFT_TRAINING__BATCH_TOKENS": "2048"}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "langgraph_dev_store.py"), "--absorb"],
                          capture_output=True, text=True, env=env, timeout=380)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    said = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line and not line.startswith("$"))
    said = {label: json.loads(value) for label, value in said.items()}

    assert said["graphs"] == ["doc_qa", "memory", "research_assistant", "router"]
    assert said["store.get_item(['memories', 'ada'], 'bellmoor').document"]["route"] == "context"
    assert said["store.search_items(query='Who built the lighthouse on Gull Rock?')"][0]["key"] == "bellmoor"
    recalled = said["runs.wait('memory', question='Who built the Bellmoor lighthouse?')"]
    assert recalled["found"][0] == "bellmoor" and recalled["answer"] is not None
    assert said["store.list_namespaces()"] == [["memories", "ada"]]
    absorbed = said["after the background absorption"]
    assert absorbed["absorption"] == "absorbed" and absorbed["adapter"] is True
    events = said["runs.stream('router', stream_mode='custom') events"]
    assert events[0] == "absorb_start" and events[-1] == "absorb_end" and int(events[1].split(" x ")[0]) >= 1
    assert said["its last absorb_step"]["step"] == said["its last absorb_step"]["total_steps"]
    assert said["get_item after store.delete_item"] is None
    assert done.stdout.rstrip().endswith("server stopped")
