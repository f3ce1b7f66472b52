"""Answers generated on a vLLM server, with each document's adapter served there as a LoRA named by its key.

``LIFT_SERVER__URL`` points lift-tool at an OpenAI-compatible vLLM server started with LoRA enabled and runtime
adapter loading allowed (``lift serve`` starts one so). Retrieval, the registry and routing stay in lift-tool:
the answering pipeline renders the prompt as it would for the in-process model and sends its tokens to
``/v1/completions``, greedy, with the log-probability of each token (lift+rag's trust rule reads them). An adapter
the server does not know yet is registered with ``/v1/load_lora_adapter`` from its registry folder (the server
reads it from there, so it must see the memory folder: the same machine or a shared filesystem), then asked again.

:class:`ServedModels` has the adapter pool's face (``base``, ``activate``), so the pipeline picks one or the other
and is otherwise the same; :func:`serve_command` is what ``lift serve`` runs.
"""

from __future__ import annotations

import json
import math
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from lift_tool.errors import ConfigError, ServerError
from lift_tool.generation import Reply
from lift_tool.prompts import render

if TYPE_CHECKING:
    from lift_tool.config import Settings
    from lift_tool.memory.registry import AdapterEntry, Registry

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM's --max-lora-rank accepts
LOCAL = "unset LIFT_SERVER__URL to answer with the model in this process"


class VllmServer:
    """The vLLM server at ``url``, serving the base model as ``base_name``."""

    def __init__(self, url: str, base_name: str, timeout: float = 300.0):
        self.url = url.rstrip("/")
        self.base_name = base_name
        self.timeout = timeout

    def _post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(f"{self.url}{path}", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout) as reply:
            text = reply.read().decode()
        return json.loads(text) if text.startswith("{") else {"message": text}

    def _call(self, path: str, body: dict) -> dict:
        try:
            return self._post(path, body)
        except urllib.error.HTTPError:
            raise
        except (OSError, ValueError) as err:
            raise ServerError(f"the vLLM server at {self.url} does not answer ({type(err).__name__}: {err}); start "
                              f"it (`lift serve`) or {LOCAL}") from None

    def load_adapter(self, adapter: "AdapterEntry") -> None:
        """Register ``adapter`` with the server under its key (reading its folder from the registry)."""
        try:
            self._call("/v1/load_lora_adapter", {"lora_name": adapter.key, "lora_path": str(adapter.path)})
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:300]
            if "already been loaded" not in detail:
                raise ServerError(f"the vLLM server at {self.url} refused adapter {adapter.key} of {adapter.title!r} "
                                  f"(HTTP {err.code}: {detail}); start the server with `lift serve` (LoRA on, runtime "
                                  f"loading allowed, rank at least the adapter's) or {LOCAL}") from None

    def complete(self, prompt_ids: list[int], adapter: "AdapterEntry | None", max_new_tokens: int,
                 stop: list[str] | None = None, temperature: float | None = None) -> dict:
        """One completion of ``prompt_ids`` (greedy unless ``temperature`` > 0), with each token's log-probability."""
        body = {"model": adapter.key if adapter is not None else self.base_name, "prompt": prompt_ids,
                "max_tokens": max_new_tokens, "temperature": temperature or 0.0, "logprobs": 0,
                **({"stop": stop} if stop else {})}
        for attempt in (1, 2):
            try:
                return self._call("/v1/completions", body)["choices"][0]
            except urllib.error.HTTPError as err:
                detail = err.read().decode(errors="replace")[:300]
                if err.code == 404 and adapter is not None and attempt == 1:
                    self.load_adapter(adapter)  # not known there yet (or evicted from its list): register, ask again
                    continue
                raise ServerError(f"the vLLM server at {self.url} refused the request (HTTP {err.code}: {detail}); "
                                  f"{LOCAL}") from None
        raise AssertionError("unreachable")

    def reply(self, tokenizer, conversation: list[dict[str, str]], adapter: "AdapterEntry | None",
              max_new_tokens: int, on_text: Callable[[str], None] | None = None, stop: list[str] | None = None,
              temperature: float | None = None) -> Reply:
        """The reply to ``conversation`` as :func:`lift_tool.generation.generate_reply` gives it, made on the server."""
        prompt = render(tokenizer, conversation, add_generation_prompt=True)
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        choice = self.complete(ids, adapter, max_new_tokens, [s for s in stop or () if s], temperature)
        logprobs = list((choice.get("logprobs") or {}).get("token_logprobs") or [])
        if choice.get("finish_reason") == "stop" and choice.get("stop_reason") is None and logprobs:
            logprobs = logprobs[:-1]  # the end-of-turn token, which the in-process reply leaves out too
        text = choice.get("text", "").strip()
        if on_text and text:
            on_text(text)
        least = min((math.exp(lp) for lp in logprobs if lp is not None), default=1.0)
        return Reply(text, least, prompt_tokens=len(ids), output_tokens=len(logprobs))


@dataclass
class ServedModel:
    """The base model on the server, or one adapter of it: what :class:`ServedModels` hands the pipeline."""

    server: VllmServer
    adapter: "AdapterEntry | None"


class ServedModels:
    """The adapter pool's face over a vLLM server: ``base()`` and ``activate(adapter)`` give a :class:`ServedModel`."""

    def __init__(self, server: VllmServer):
        self.server = server

    @contextmanager
    def base(self) -> Iterator[ServedModel]:
        yield ServedModel(self.server, None)

    @contextmanager
    def activate(self, adapter: "AdapterEntry") -> Iterator[ServedModel]:
        yield ServedModel(self.server, adapter)

    @contextmanager
    def combine(self, adapters: list["AdapterEntry"], how: str = "cat") -> Iterator[ServedModel]:
        raise ConfigError("multi_document=combine merges adapters in this process; a vLLM server answers with one "
                          "adapter a request: use multi_document=per-document (the default) or unset "
                          "LIFT_SERVER__URL")
        yield  # pragma: no cover


# ----------------------------------------------------------------------------------------------- lift serve


def vllm_python(settings: "Settings") -> Path:
    """The Python of vLLM's own environment: ``LIFT_SERVER__PYTHON``, else ``.venv-serve`` beside this one."""
    candidates = [settings.server.python] if settings.server.python else [
        Path(sys.prefix).parent / ".venv-serve" / "bin" / "python"]
    for python in candidates:
        if Path(python).is_file():
            return Path(python)
    raise ConfigError(f"vLLM's environment was not found at {candidates[0]}: build it with `scripts/setup.sh serve` "
                      "(it keeps vLLM's pinned versions apart from lift-tool's), or set LIFT_SERVER__PYTHON")


def lora_rank_for(registry: "Registry", settings: "Settings") -> int:
    """The smallest rank vLLM accepts that holds every adapter in the registry and the configured rank."""
    ranks = [settings.lora.rank]
    for entry in registry.list_documents():
        for adapter in entry.adapters:
            try:
                ranks.append(int(json.loads((adapter.path / "adapter_config.json").read_text())["r"]))
            except (OSError, ValueError, KeyError):
                continue
    wanted = max(ranks)
    return next((rank for rank in VLLM_RANKS if rank >= wanted), VLLM_RANKS[-1])


def serve_command(settings: "Settings", registry: "Registry", model_folder: Path, base_name: str, dtype: str,
                  host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start vLLM on the base model, ready for the registry's adapters.

    ``--max-loras``: adapters in one batch (``LIFT_SERVER__MAX_LORAS``, default 8); ``--max-cpu-loras``: adapters
    kept loaded in host memory (default every adapter in the registry, at least 32 and at least max-loras);
    ``--max-lora-rank``: the registry's largest rank, rounded up to a value vLLM accepts.
    """
    server = settings.server
    count = sum(len(entry.adapters) for entry in registry.list_documents())
    cpu_loras = server.max_cpu_loras or max(32, count, server.max_loras)
    command = [
        str(vllm_python(settings)), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_folder), "--served-model-name", base_name, "--dtype", dtype,
        "--host", host, "--port", str(port),
        "--enable-lora", "--max-lora-rank", str(lora_rank_for(registry, settings)),
        "--max-loras", str(server.max_loras), "--max-cpu-loras", str(cpu_loras),
        "--max-model-len", str(server.max_model_len),
    ]
    env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}  # lift-tool registers adapters as documents are absorbed
    return command, env


__all__ = ["ServedModel", "ServedModels", "VllmServer", "lora_rank_for", "serve_command", "vllm_python"]
