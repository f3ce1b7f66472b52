"""Typed settings for lift-tool.

Every field can be overridden from the environment with the prefix ``LIFT_`` (nested fields with ``__``), for
example ``LIFT_HOME=/data/lift`` or ``LIFT_TRAINING__EPOCHS=3``. Code passes a :class:`Settings` around; nothing
reads the environment elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from lift_tool.errors import ConfigError

APP_NAME = "lift-tool"


class LoraSettings(BaseModel):
    """The LoRA adapter: every attention and MLP projection of the upper layers of the model."""

    rank: int = Field(16, ge=1, le=512)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    # The share of layers, counted from the top, that get LoRA. Backpropagation stops at the lowest adapted
    # layer, so training costs less. None: chosen by model size (absorb.settings_for_model), the upper half for
    # small models like the default, every layer from 300M parameters up.
    layer_fraction: float | None = Field(None, gt=0, le=1)

    def adapted_layers(self, n_layers: int) -> list[int]:
        """Indices of the layers that get LoRA, for a model with ``n_layers`` layers."""
        if self.layer_fraction is None:
            raise ValueError("layer_fraction is chosen by model size first (absorb.settings_for_model)")
        return list(range(n_layers - max(1, round(n_layers * self.layer_fraction)), n_layers))


class TaskMix(BaseModel):
    """Relative weights of the five kinds of training example (see ``lift_tool.training.tasks``).

    A weight is how many passes over the kind's natural set one epoch holds (every segment once, every
    generated question once); fractions take a random part; 0 turns a kind off. The defaults were chosen by
    measurement on the demo document within a 90-second CPU budget (docs/recipe.md, step 1): closed-book
    questions carry recall; a little of each long-context kind keeps the adapter able to use text in its prompt.
    """

    segments: float = Field(0.25, ge=0)  # plain language modelling on overlapping segments
    contextual: float = Field(0.25, ge=0)  # a segment after the document's head, loss on the segment only
    qa: float = Field(5.0, ge=0)  # synthetic question-answer pairs, asked closed-book, loss on the answer
    qa_long: float = Field(0.15, ge=0)  # the same questions with the surrounding text in the prompt
    # The same questions with passages cut and ranked as retrieval does in the prompt, the one that answers among
    # them or (``TrainingSettings.passages_without_answer``) left out: what lift+rag shows the adapter.
    qa_passages: float = Field(0.0, ge=0)
    unanswerable: float = Field(0.08, ge=0)  # questions the document does not answer, as a share of qa


class TrainingSettings(BaseModel):
    """How an adapter is trained: segments, the task mix, batches, learning rate, steps, budget and precision."""

    segment_tokens: int = Field(256, ge=16)
    segment_stride: int = Field(192, ge=8)
    long_context_tokens: int = Field(512, ge=32)  # window of text around the evidence in long-context samples
    epochs: float = Field(1.0, gt=0)  # passes over the mix below (its weights already repeat the questions)
    # A short document gives few steps per epoch, too few for LoRA to learn it: repeat it up to this many.
    min_steps: int = Field(60, ge=0)
    learning_rate: float | None = Field(None, gt=0)  # None: chosen by model size (absorb.settings_for_model)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_tokens: int = Field(512, ge=16)  # tokens (padding included) in one micro-batch: small means many steps
    grad_accum: int = Field(1, ge=1)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 0
    budget_seconds: float | None = Field(None, gt=0)  # stop at the budget and keep what was learnt
    # Save the state of training this often (seconds), so that an interrupted absorption of the same document
    # goes on from there when it is absorbed again (training.checkpoint); None: never.
    checkpoint_seconds: float | None = Field(300.0, gt=0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # bf16 autocast where the hardware supports it
    questions_per_sentence: int = Field(4, ge=1)  # rule-based questions kept per sentence of the document
    # At most this share of the questions (and at least 3) may have the same answer; the rest of them are left
    # out. A document's subject answers many of its rule-made questions, and an adapter trained on them answers
    # the subject's name to anything. None: chosen by model size (absorb.settings_for_model); 1 keeps them all.
    max_answer_share: float | None = Field(None, gt=0, le=1)
    qa_per_conversation: int = Field(8, ge=1)  # questions per training chat: the prompt around them is paid once
    # New closed-book chats every epoch (each question among other neighbours each pass), or the same chats every
    # pass, which lets the frozen-layer cache below skip the lower layers on repeats (training.tasks). The same
    # chats answered 27 of 48 demo questions over three seeds against 31 (benchmarks/results/recipe/recipe.md).
    regroup_questions: bool = True
    # Memory for the output of the frozen layers below the adapter, kept for examples seen again so that they
    # skip those layers (training.layer_cache); 0 turns it off.
    frozen_layer_cache_mb: int = Field(1024, ge=0)
    # Context distillation (training.distill): the weight, beside each closed-book answer's cross-entropy, of its
    # divergence from what the model answers with the answer's passage in its prompt; 0 turns it off.
    distill: float = Field(0.0, ge=0)
    # Questions the model itself writes about each passage of a few sentences, answered by it with the passage in
    # its prompt; the usable ones join the rule-made questions (training.written_questions). 0: none.
    written_questions: int = Field(0, ge=0)
    # Restatements of each such passage the model writes itself (in other words, or its facts one to a line); the
    # rule questions about the usable ones join the others (training.written_questions). 0: none.
    restatements: int = Field(0, ge=0)
    # LoRA+ (arXiv 2402.12354): the learning rate of each adapter's B matrix, as a multiple of A's (the learning
    # rate above). 1: both learn at the same rate.
    lora_b_lr_ratio: float = Field(1.0, ge=1)
    # Of the examples with retrieved passages (``mix.qa_passages``), the share whose passages leave out the one
    # that answers, so that the answer comes from the adapter (RAFT, arXiv 2403.10131, kept it in 80%).
    passages_without_answer: float = Field(0.2, ge=0, le=1)
    mix: TaskMix = TaskMix()

    @model_validator(mode="after")
    def _stride_fits(self) -> "TrainingSettings":
        if self.segment_stride > self.segment_tokens:
            raise ValueError("segment_stride must not exceed segment_tokens (segments would leave gaps)")
        return self


class RetrievalSettings(BaseModel):
    """How passages are found and used: chunks, search method, document choice and lift+rag's trust rule."""

    k: int = Field(4, ge=1, le=50)  # chunks put in the prompt
    # How chunks are ranked: embeddings and keywords (BM25) fused ("hybrid"), or either alone. Hybrid puts the
    # passage that answers in the prompt more often than embeddings alone: benchmarks/results/retrieval/retrieval.md.
    search: Literal["hybrid", "dense", "keyword"] = "hybrid"
    chunk_tokens: int = Field(200, ge=16, le=254)  # word pieces of the embedding model (its limit is 256)
    chunk_overlap: int = Field(50, ge=0)
    # A question is about a stored document when its best chunk scores at least this (cosine similarity);
    # measured in benchmarks/results/doc_choice/doc_choice.md.
    document_threshold: float = Field(0.35, ge=-1, le=1)
    # lift+rag keeps the adapter's answer when the model gave each of its tokens at least this probability, and
    # otherwise answers from the passages without the adapter (as rag does); 0 keeps every adapter answer.
    # Measured in benchmarks/results/adapter_trust/smollm2-135m.md.
    adapter_min_probability: float = Field(0.5, ge=0, le=1)


class ChromaSettings(BaseModel):
    """Where the retrieval store lives: the memory folder (embedded Chroma) or a Chroma server that several
    lift-tool processes share (``LIFT_CHROMA__URL=http://host:8000``, started with ``chroma run``)."""

    url: str | None = None
    collection: str = Field("lift_chunks", min_length=3, max_length=512)  # one per memory on a shared server


class ServerSettings(BaseModel):
    """A vLLM server that generates the answers (``LIFT_SERVER__URL=http://host:8000``), and how ``lift serve``
    starts one (lift_tool.served)."""

    url: str | None = None
    python: Path | None = None  # vLLM's own environment (default: .venv-serve beside lift-tool's)
    max_loras: int = Field(8, ge=1)  # adapters in one batch on the server
    max_cpu_loras: int | None = Field(None, ge=1)  # adapters kept loaded there; None: every one in the registry
    max_model_len: int = Field(4096, ge=256)


class ClusterSettings(BaseModel):
    """A Ray cluster that absorbs documents (``LIFT_CLUSTER__ADDRESS``: ``auto``, ``host:port`` of the head, or
    ``ray://host:port``), each a job on a worker (lift_tool.cluster)."""

    address: str | None = None
    max_retries: int = Field(2, ge=0)  # a job whose worker died is run again this many times, then reported failed
    cpus_per_job: float = Field(1.0, gt=0)
    gpus_per_job: float = Field(0.0, ge=0)


class Settings(BaseSettings):
    """Every setting of lift-tool, read from the environment (``LIFT_`` prefix, ``__`` for nesting) or given."""

    model_config = SettingsConfigDict(env_prefix="LIFT_", env_nested_delimiter="__", extra="ignore")

    model: str = "smollm2-135m"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    backend: Literal["auto", "peft", "unsloth"] = "auto"
    home: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir(APP_NAME)))
    cache_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_cache_dir(APP_NAME)))
    max_document_tokens: int = Field(200_000, ge=1)
    max_document_bytes: int = Field(64 * 2**20, ge=1)  # the largest file read as a document, checked before reading
    # The folders whose files an agent may have read (the lift_absorb tool's path, the router graph's source):
    # by default the working directory and the user's documents folder. LIFT_ALLOWED_ROOTS: a list separated by
    # os.pathsep (":" on Linux). The CLI, run by the user in their own shell, reads any file.
    allowed_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path.cwd(), Path(platformdirs.user_documents_dir())])
    max_question_tokens: int = Field(1024, ge=16)  # a longer question is refused (it would take minutes to answer)
    archive_max_bytes: int = Field(2**30, ge=1)  # the most an archive given to `lift import` may unpack to
    archive_max_files: int = Field(1_000, ge=1)  # the most files it may hold
    max_new_tokens: int = Field(64, ge=1)
    context_window: int | None = Field(None, ge=64)  # None: the model's own window
    pool_capacity: int = Field(8, ge=1)  # adapters kept resident on the answering model
    shared_lifts: int = Field(8, ge=1)  # memories kept open by shared_lift (tools, graphs); one model for all
    # Several documents with adapters in one question: answer with each adapter and keep the answers of the
    # documents that know ("per-document"), or merge the adapters into one ("combine"). Chosen by measurement:
    # benchmarks/results/multi_document/smollm2-135m.md.
    multi_document: Literal["combine", "per-document"] = "per-document"
    lora: LoraSettings = LoraSettings()
    training: TrainingSettings = TrainingSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    chroma: ChromaSettings = ChromaSettings()
    server: ServerSettings = ServerSettings()
    cluster: ClusterSettings = ClusterSettings()

    @field_validator("allowed_roots", mode="before")
    @classmethod
    def _split_roots(cls, value):
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part.strip()]
        return value

    def training_fingerprint(self) -> str:
        """A short hash of everything that changes what absorption learns (not where files go). A setting added
        later counts only when it differs from the value that trains as before it existed (``AS_BEFORE``), so the
        adapters stored until then keep matching their settings."""
        speed_only = {"budget_seconds", "frozen_layer_cache_mb", "checkpoint_seconds"}
        training = self.training.model_dump(exclude=speed_only)
        for name, value in AS_BEFORE.items():
            if training.get(name) == value:
                del training[name]
        if training["mix"]["qa_passages"] == 0:  # none of the passage settings then changes what is learnt
            del training["mix"]["qa_passages"], training["passages_without_answer"]
        relevant = {"lora": self.lora.model_dump(), "training": training}
        if self.training.mix.qa_passages > 0:  # the passages are cut and counted as retrieval's
            relevant["passages"] = self.retrieval.model_dump(include={"k", "chunk_tokens", "chunk_overlap"})
        blob = json.dumps(relevant, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# Training settings added after adapters were stored, with the value that trains exactly as before they existed.
AS_BEFORE = {"regroup_questions": True, "distill": 0.0, "written_questions": 0, "lora_b_lr_ratio": 1.0,
             "restatements": 0}


def load_settings(**overrides) -> Settings:
    """Settings from the environment, with explicit overrides on top; a bad value is a :class:`ConfigError`."""
    try:
        return Settings(**overrides)
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"invalid lift-tool setting: {err}") from None
