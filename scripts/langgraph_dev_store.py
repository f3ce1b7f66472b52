"""LiftStore behind `langgraph dev`: serve the project's graphs on 127.0.0.1 with langgraph.json (its store is
``lift_tool.store.make_store``), talk to them with a ``langgraph_sdk`` client, print what goes back and forth,
stop the server.

    .venv/bin/python scripts/langgraph_dev_store.py            # a scratch memory on the default model
    .venv/bin/python scripts/langgraph_dev_store.py --absorb   # also the sample document, and a streamed absorption

With --absorb the store gets the bundled sample document (1,954 tokens): it is absorbed in the background where it
is longer than the model's window (the test suite's tiny model: 1,024 tokens), else passed in context, as the
router decides; then the router graph absorbs a short note (route_override "absorb") with its progress streamed.

The memory is a scratch folder unless LIFT_HOME is set; other LIFT_* settings (LIFT_MODEL, ...) pass through.
Needs `pip install -e .[dev]` (langgraph-cli[inmem]). The server's log is kept beside the memory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTE = ("The Bellmoor lighthouse stands on Gull Rock at the mouth of the Fenn estuary. It was built in 1901 by the "
        "engineer Ada Quill and is painted red and white.")


def say(label: str, value) -> None:
    print(f"{label}: {json.dumps(value, ensure_ascii=False, default=str)}", flush=True)


@contextlib.contextmanager
def langgraph_dev(scratch: Path):
    """`langgraph dev` on a free loopback port, no browser, no reloading; its URL."""
    config = json.loads((ROOT / "langgraph.json").read_text())
    config["dependencies"] = [str(ROOT)]
    config["graphs"] = {name: str(ROOT / spec) for name, spec in config["graphs"].items()}
    (scratch / "langgraph.json").write_text(json.dumps(config))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cli = shutil.which("langgraph", path=str(Path(sys.executable).parent)) or "langgraph"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGSMITH_TRACING": "false"}
    env.setdefault("LIFT_HOME", str(scratch / "home"))
    log = open(scratch / "server.log", "w")
    server = subprocess.Popen([cli, "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port),
                               "--config", str(scratch / "langgraph.json")], cwd=scratch, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                raise SystemExit(f"langgraph dev stopped:\n{(scratch / 'server.log').read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("langgraph dev did not start in 180 s")
            time.sleep(1)
        print(f"$ langgraph dev --no-browser --host 127.0.0.1 --port {port}   (store: {config['store']['path']})")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and what it started, nothing else
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()
        print("server stopped", flush=True)


def talk(url: str, absorb: bool) -> None:
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=url)
    say("graphs", sorted(a["graph_id"] for a in client.assistants.search()))
    client.store.put_item(["memories", "ada"], "bellmoor", {"text": NOTE, "title": "Bellmoor lighthouse"})
    say("store.get_item(['memories', 'ada'], 'bellmoor').document",
        client.store.get_item(["memories", "ada"], "bellmoor")["document"])
    found = client.store.search_items(["memories"], query="Who built the lighthouse on Gull Rock?", limit=2)["items"]
    say("store.search_items(query='Who built the lighthouse on Gull Rock?')",
        [{"key": i["key"], "score": round(i["score"], 3), "chunk": i["chunks"][0]["text"][:60]} for i in found])
    out = client.runs.wait(None, "memory", input={"note": "Ada Quill also designed the Fenn swing bridge in 1907."},
                           context={"user_id": "ada"})
    say("runs.wait('memory', note=...).stored", out["stored"])
    out = client.runs.wait(None, "memory", input={"question": "Who built the Bellmoor lighthouse?"},
                           context={"user_id": "ada"})
    say("runs.wait('memory', question='Who built the Bellmoor lighthouse?')",
        {"found": [f["key"] for f in out["found"]], "mode": out["mode"], "answer": out["answer"]})
    say("store.list_namespaces()", client.store.list_namespaces()["namespaces"])
    if absorb:
        from lift_tool.sample import sample_document_path

        client.store.put_item(["docs"], "harrowmere", {"text": sample_document_path().read_text()})
        document = client.store.get_item(["docs"], "harrowmere")["document"]
        say("store.put_item(['docs'], 'harrowmere', <long document>) -> document", document)
        while document["absorption"] == "running":
            time.sleep(2)
            document = client.store.get_item(["docs"], "harrowmere")["document"]
        say("after the background absorption", document)
        stream = client.runs.stream(None, "router", input={"source": NOTE, "route_override": "absorb"},
                                    stream_mode="custom")
        events = [part.data for part in stream if part.event == "custom"]
        steps = [event for event in events if event["event"] == "absorb_step"]
        say("runs.stream('router', stream_mode='custom') events",
            [events[0]["event"], f"{len(steps)} x absorb_step", events[-1]["event"]])
        say("its last absorb_step", {k: round(v, 3) if isinstance(v, float) else v for k, v in steps[-1].items()})
    client.store.delete_item(["memories", "ada"], "bellmoor")
    say("get_item after store.delete_item", client.store.get_item(["memories", "ada"], "bellmoor"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--absorb", action="store_true", help="also absorb a long document, and stream a routing")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="lift-langgraph-dev-"))
    with langgraph_dev(scratch) as url:
        talk(url, args.absorb)


if __name__ == "__main__":
    main()
