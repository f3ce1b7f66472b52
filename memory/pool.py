"""Adapters resident on one live model: load on demand, switch per query, evict the least recently used.

PEFT can hold many adapters on one model (``load_adapter`` / ``set_adapter`` / ``delete_adapter``), but each of
those calls walks every module of the model and every adapter already loaded, so they slow down as adapters pile
up. Measured on SmolLM2-135M (30 layers, rank 16 on all seven projections, 2 CPU cores; benchmarks/bench_pool.py):
``load_adapter`` took 210-250 ms for the first adapter and 380-760 ms for the eighth, ``set_adapter`` 26-44 ms with
eight resident.
So the pool lets PEFT build the LoRA layers into the model and does the per-query part itself:

- A *slot* is one PEFT adapter on the model, made by PEFT (``get_peft_model``, then ``add_adapter``) the first time
  an adapter with a given LoRA configuration (rank, alpha, target modules, ...) arrives. Documents absorbed with the
  same settings share a slot.
- A *resident* adapter is its weights, held as tensors on the model's device (read straight from
  ``adapter_model.safetensors``, after the registry has checked the file's checksum).
- Activating an adapter points its slot's parameters at its tensors (``param.data = tensor``: no copy, ~0.1 ms),
  makes the slot PEFT's active adapter and enables the adapter layers. Leaving the block disables them again, so
  outside a block the model computes exactly the base model, whoever calls it.
- Evicting drops the tensors (the slot is pointed at zero-stride placeholders if it was using them), a slot that
  no resident adapter needs any more is removed with ``delete_adapter``, and freed heap memory is handed back to
  the operating system: RSS follows what is resident.

One generation runs at a time per model: a block holds the pool's lock (a ``threading.RLock``) from entry to exit,
so threads sharing a pool queue up. Blocks do not nest.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import json
import math
import threading
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from lift_tool.errors import CorruptAdapterError, IncompatibleAdapterError

from lift_tool.memory.registry import CONFIG_FILE, WEIGHTS_FILE, AdapterEntry, Registry

if TYPE_CHECKING:
    import torch

COMBINATIONS = ("cat", "linear", "svd")

# Fields of adapter_config.json that do not change what the LoRA layers look like or compute.
_CONFIG_NOISE = {"base_model_name_or_path", "revision", "inference_mode", "peft_version", "auto_mapping", "task_type", "init_lora_weights"}


@dataclass
class _Slot:
    """A PEFT adapter on the model whose parameters are pointed at one resident adapter's tensors at a time."""

    name: str  # the PEFT adapter name
    config: Any  # its peft.LoraConfig
    params: dict[str, "torch.nn.Parameter"]  # tensor name as saved in adapter_model.safetensors -> live parameter
    current: str | None = None  # key of the resident adapter the parameters point at


@dataclass
class _Resident:
    key: str
    title: str
    slot: str  # signature of the slot it fits
    config: Any  # its peft.LoraConfig
    tensors: dict[str, "torch.Tensor"] = field(repr=False)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


def _signature(config: Any) -> str:
    """Adapters whose configurations agree on this can share one slot."""
    relevant = {k: v for k, v in config.to_dict().items() if k not in _CONFIG_NOISE}
    blob = json.dumps(relevant, sort_keys=True, default=lambda v: sorted(v) if isinstance(v, (set, frozenset)) else str(v))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class AdapterPool:
    """Up to ``capacity`` adapters kept ready on one live model, for one base model (``base_fingerprint``).

    ``model`` is a transformers model; the pool builds LoRA layers into it on the first load (they compute nothing
    outside a block). Use it through :meth:`activate`, :meth:`combine` and :meth:`base`.
    """

    def __init__(self, model, base_fingerprint: str, registry: Registry, capacity: int = 8):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.model = model
        self.base_fingerprint = base_fingerprint
        self.registry = registry
        self.capacity = capacity
        self._lock = threading.RLock()
        self._in_block = False
        self._peft = None  # the peft.PeftModel around ``model``, made on the first load
        self._slots: dict[str, _Slot] = {}  # signature -> slot
        self._resident: OrderedDict[str, _Resident] = OrderedDict()  # least recently used first
        self._layers: list = []  # PEFT's LoRA layers in the model, to enable and disable them quickly
        self._flag_only = False  # whether enabling a layer may just set the flag its forward reads (see _set_enabled)
        self._active_slot: str | None = None

    # ---------------------------------------------------------------------------------------------- public

    @contextmanager
    def activate(self, entry: AdapterEntry) -> Iterator[Any]:
        """Run a block with ``entry``'s adapter active; yields the model to generate with.

        Loads the adapter from disk if it is not resident (checking its checksums first), evicting the least
        recently used one at capacity. An adapter trained on another base model is refused.
        """
        with self._block():
            self._check_base(entry)
            resident = self._resident_for(entry)
            self._point_at(resident)
            yield self.model

    @contextmanager
    def combine(self, entries: Sequence[AdapterEntry], weights: Sequence[float] | None = None, how: str = "cat") -> Iterator[Any]:
        """Run a block with several documents' adapters combined into one; yields the model.

        ``how``: "cat" adds the adapters' updates exactly (the ranks add up); "linear" averages their A and B
        matrices separately (same rank needed; cheap, approximate); "svd" adds the updates and keeps the largest
        rank of the parts (exact up to that rank; slower to build). The combination is cached like an adapter,
        under a key made from its parts, weights and ``how``, and evicted like one.
        """
        if how not in COMBINATIONS:
            raise ValueError(f"how must be one of {COMBINATIONS}, not {how!r}")
        if not entries:
            raise ValueError("combine() needs at least one adapter")
        weights = [1.0] * len(entries) if weights is None else [float(w) for w in weights]
        if len(weights) != len(entries):
            raise ValueError(f"{len(entries)} adapters but {len(weights)} weights")
        parts = json.dumps([how, [[entry.key, weight] for entry, weight in zip(entries, weights)]])
        key = "mix-" + hashlib.sha256(parts.encode()).hexdigest()[:20]
        with self._block():
            for entry in entries:
                self._check_base(entry)
            resident = self._resident.get(key)
            if resident is None:
                loaded = [self._resident_for(entry) for entry in entries]  # held here even if evicted meanwhile
                tensors, config = _combine(loaded, weights, how)
                title = " + ".join(part.title for part in loaded)
                resident = self._admit(key, title, config, tensors)
            else:
                self._resident.move_to_end(key)
            self._point_at(resident)
            yield self.model

    @contextmanager
    def base(self) -> Iterator[Any]:
        """Run a block on the base model, every adapter off; yields the model."""
        with self._block():
            yield self.model  # adapters are disabled whenever no activate()/combine() block is running

    def resident(self) -> list[str]:
        """Keys of the resident adapters, least recently used first, most recent last."""
        with self._lock:
            return list(self._resident)

    def resident_bytes(self) -> int:
        """Memory held by resident adapters' weights."""
        with self._lock:
            return sum(resident.nbytes for resident in self._resident.values())

    def evict(self, key: str) -> bool:
        """Drop one resident adapter (for example after its document was forgotten). True if it was resident."""
        with self._lock:
            if self._in_block:
                raise RuntimeError("cannot evict inside an activate()/combine()/base() block")
            if key not in self._resident:
                return False
            self._drop(key)
            return True

    def clear(self) -> None:
        """Drop every resident adapter and remove the LoRA layers' slots."""
        with self._lock:
            if self._in_block:
                raise RuntimeError("cannot clear inside an activate()/combine()/base() block")
            for key in list(self._resident):
                self._drop(key)
            gc.collect()

    def release(self) -> None:
        """Drop everything and take the LoRA layers out of the model, leaving the bare base model (for example
        so that the model can be trained). The pool builds them again on the next load."""
        with self._lock:
            self.clear()
            if self._peft is not None:
                self.model = self._peft.unload()
                self._peft = None
                self._slots.clear()
                self._layers = []
                self._active_slot = None

    # --------------------------------------------------------------------------------------------- blocks

    @contextmanager
    def _block(self) -> Iterator[None]:
        with self._lock:
            if self._in_block:
                raise RuntimeError("pool blocks do not nest: leave the current activate()/combine()/base() block first")
            self._in_block = True
            try:
                yield
            finally:
                self._set_enabled(False)  # outside a block the model is the base model
                self._in_block = False

    def _check_base(self, entry: AdapterEntry) -> None:
        if entry.base_fingerprint != self.base_fingerprint:
            raise IncompatibleAdapterError(
                f"the adapter for '{entry.title}' was trained on {entry.base_model} ({entry.base_fingerprint}), "
                f"but the model in use is {self.base_fingerprint}: use that model, or absorb the document again "
                "with this one"
            )

    # -------------------------------------------------------------------------------------- loading

    def _resident_for(self, entry: AdapterEntry) -> _Resident:
        resident = self._resident.get(entry.key)
        if resident is not None:
            self._resident.move_to_end(entry.key)
            return resident
        return self._load(entry)

    def _load(self, entry: AdapterEntry) -> _Resident:
        import torch
        from peft import LoraConfig
        from safetensors.torch import load

        # Checked against its checksums before any byte of it reaches the model; the weights are read once, and
        # the bytes checked are the bytes loaded.
        weights = self.registry.read_intact(entry, WEIGHTS_FILE)
        raw = json.loads((entry.path / CONFIG_FILE).read_text(encoding="utf-8"))
        if raw.get("peft_type") != "LORA":
            raise IncompatibleAdapterError(f"the adapter for '{entry.title}' is a {raw.get('peft_type')} adapter; the pool loads LoRA adapters only")
        config = LoraConfig.from_pretrained(str(entry.path))
        self._check_rank(entry, config)
        signature = _signature(config)
        slot = self._slot_for(config)
        try:
            # load(bytes) rather than load_file(): measured over 1,000 loads, load_file (safe_open) left the process
            # ~25 KiB bigger per call, load(bytes) nothing.
            try:
                tensors = load(weights)
            except Exception as err:  # safetensors raises its own error types for malformed files
                raise CorruptAdapterError(
                    f"the adapter for '{entry.title}' has unreadable weights ({err}): run `lift verify --repair`, "
                    "then absorb the document again"
                ) from None
            if not all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point()):
                raise CorruptAdapterError(
                    f"the adapter for '{entry.title}' has NaN or infinite weights: run `lift verify --repair`, then "
                    "absorb the document again"
                )
            if set(tensors) != set(slot.params):
                raise IncompatibleAdapterError(
                    f"the adapter for '{entry.title}' does not fit this model: its weight file holds other tensors "
                    "than its configuration describes; absorb the document again"
                )
            for name, param in slot.params.items():
                if tensors[name].shape != param.shape:
                    raise IncompatibleAdapterError(
                        f"the adapter for '{entry.title}' does not fit this model: {name} has shape "
                        f"{tuple(tensors[name].shape)}, the model needs {tuple(param.shape)}; absorb the document again"
                    )
                # The slot's dtype and device: what PEFT's loader gives (it keeps LoRA in fp32 on a bf16 model).
                tensors[name] = tensors[name].to(device=param.device, dtype=param.dtype)
        except BaseException:
            if not any(resident.slot == signature for resident in self._resident.values()):
                self._remove_slot(signature)  # built for this adapter only
            raise
        del weights  # the tensors are copies: let the file's bytes go before anything is evicted
        return self._admit(entry.key, entry.title, config, tensors)

    def _check_rank(self, entry: AdapterEntry, config: Any) -> None:
        """Refuse a rank no layer of this model can use before any LoRA layer is built: the layers are allocated
        from the configuration, so a rank of 100,000 in a tampered config would take gigabytes first."""
        import torch

        widest = max((min(m.in_features, m.out_features) for m in self.model.modules() if isinstance(m, torch.nn.Linear)),
                     default=0)
        ranks = [config.r, *(getattr(config, "rank_pattern", None) or {}).values()]
        unusable = [r for r in ranks if not isinstance(r, int) or isinstance(r, bool) or not 0 < r <= widest]
        if unusable:
            raise IncompatibleAdapterError(
                f"the adapter for '{entry.title}' does not fit this model: its LoRA rank {unusable[0]!r} is not "
                f"between 1 and {widest}, the most a layer of this model can use; absorb the document again"
            )

    def _admit(self, key: str, title: str, config: Any, tensors: dict[str, "torch.Tensor"]) -> _Resident:
        self._slot_for(config)
        resident = _Resident(key=key, title=title, slot=_signature(config), config=config, tensors=tensors)
        self._resident[key] = resident
        while len(self._resident) > self.capacity:
            self._drop(next(iter(self._resident)))
        return resident

    def _drop(self, key: str) -> None:
        resident = self._resident.pop(key)
        slot = self._slots[resident.slot]
        if slot.current == key:  # let the tensors go: point the slot at placeholders that hold no memory
            for param in slot.params.values():
                param.data = _placeholder(param)
            slot.current = None
        if not any(other.slot == resident.slot for other in self._resident.values()):
            self._remove_slot(resident.slot)
        del resident
        _return_freed_memory()

    # ----------------------------------------------------------------------------------------------- slots

    def _slot_for(self, config: Any) -> _Slot:
        """The slot for adapters with this configuration, built on first use."""
        signature = _signature(config)
        slot = self._slots.get(signature)
        if slot is not None:
            return slot
        import dataclasses

        from peft import get_peft_model
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils import get_peft_model_state_dict

        name = f"lift_slot_{signature}"
        # Its initial weights are replaced before use: skip PEFT's special initialisations, which may touch the
        # base weights (PiSSA, OLoRA, ...).
        slot_config = dataclasses.replace(config, inference_mode=True, init_lora_weights=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self._peft is None:
                self._peft = get_peft_model(self.model, slot_config, adapter_name=name)
                self._peft.eval()
            else:
                self._peft.add_adapter(name, slot_config)
        # Map the names saved in adapter files (PEFT drops the adapter name) to the live parameters.
        params = {
            ".".join(part for part in full.split(".") if part != name): param
            for full, param in self._peft.named_parameters()
            if name in full.split(".")
        }
        saved = set(get_peft_model_state_dict(self._peft, adapter_name=name))
        if set(params) != saved:
            self._peft.delete_adapter(name)
            raise IncompatibleAdapterError(f"the pool cannot map the LoRA weights of this model ({type(self.model).__name__})")
        for param in params.values():
            param.requires_grad_(False)
        slot = _Slot(name=name, config=slot_config, params=params)
        self._slots[signature] = slot
        self._layers = [module for module in self.model.modules() if isinstance(module, BaseTunerLayer)]
        self._flag_only = _flag_reaches_forward(self._layers[0])
        self._set_enabled(False)
        return slot

    def _remove_slot(self, signature: str) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        slot = self._slots.pop(signature)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "adapter X was active which is now deleted"
            self._peft.delete_adapter(slot.name)
        if self._active_slot == slot.name:
            self._active_slot = None
        self._layers = [module for module in self.model.modules() if isinstance(module, BaseTunerLayer)]

    def _point_at(self, resident: _Resident) -> None:
        slot = self._slots[resident.slot]
        if slot.current != resident.key:
            for name, param in slot.params.items():
                param.data = resident.tensors[name]
            slot.current = resident.key
        if self._active_slot != slot.name:
            self._peft.set_adapter(slot.name, inference_mode=True)  # walks the model, but only when the slot changes
            self._active_slot = slot.name
        self._set_enabled(True)
        for param in slot.params.values():
            param.requires_grad_(False)  # enable_adapters() marks the active adapter trainable; inference only here

    def _set_enabled(self, enabled: bool) -> None:
        # PEFT's layer.enable_adapters() also walks every adapter parameter to reset requires_grad: ~4 ms a call
        # on a 30-layer model, twice per block. The pool keeps every adapter parameter frozen itself, so only the
        # flag that the layer's forward reads has to change. Set it directly when it is the very flag that PEFT's
        # public `disable_adapters` property reports (checked once per slot), else take the public way.
        for layer in self._layers:
            if self._flag_only:
                layer._disable_adapters = not enabled
            else:
                layer.enable_adapters(enabled)


_malloc_trim: Any = None  # glibc's malloc_trim, False where there is none


def _return_freed_memory() -> None:
    """Hand memory freed by an eviction back to the operating system.

    glibc keeps freed heap memory for later reuse, so without this the process's RSS crept up by ~1 MiB per 250
    evictions (measured) although nothing leaked; with it RSS stays flat. ~1-4 ms; a no-op off glibc.
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


def _flag_reaches_forward(layer: Any) -> bool:
    """Whether setting ``layer._disable_adapters`` is what PEFT's ``layer.disable_adapters`` then reports."""
    if not hasattr(layer, "_disable_adapters"):
        return False
    saved = layer._disable_adapters
    try:
        layer._disable_adapters = True
        on = layer.disable_adapters is True
        layer._disable_adapters = False
        return on and layer.disable_adapters is False
    finally:
        layer._disable_adapters = saved


def _placeholder(param: "torch.nn.Parameter") -> "torch.Tensor":
    import torch

    return torch.zeros((), dtype=param.dtype, device=param.device).expand(param.shape)


def _scaling(config: Any) -> float:
    return config.lora_alpha / (math.sqrt(config.r) if config.use_rslora else config.r)


def _combine(parts: list[_Resident], weights: list[float], how: str) -> tuple[dict[str, "torch.Tensor"], Any]:
    """The LoRA weights and configuration of a weighted combination (the same arithmetic as PEFT's
    ``add_weighted_adapter``, done on tensors so no PEFT adapter is built per part)."""
    import dataclasses

    import torch

    names = set(parts[0].tensors)
    titles = ", ".join(f"'{part.title}'" for part in parts)
    for part in parts:
        if set(part.tensors) != names:
            raise IncompatibleAdapterError(f"cannot combine {titles}: they adapt different modules (absorbed with other settings)")
        config = part.config
        if config.use_dora or config.rank_pattern or config.alpha_pattern:
            raise IncompatibleAdapterError(f"cannot combine {titles}: only plain LoRA adapters with one rank can be combined")
    if any(not name.endswith((".lora_A.weight", ".lora_B.weight")) for name in names):
        raise IncompatibleAdapterError(f"cannot combine {titles}: only LoRA adapters on linear layers can be combined")
    ranks = [part.config.r for part in parts]
    if how == "linear" and len(set(ranks)) > 1:
        raise IncompatibleAdapterError(f"cannot combine {titles} linearly: their ranks differ ({ranks}); use how='cat'")
    rank = {"cat": sum(ranks), "linear": ranks[0], "svd": max(ranks)}[how]
    scaled = [weight * _scaling(part.config) for part, weight in zip(parts, weights)]

    combined: dict[str, torch.Tensor] = {}
    for module in sorted(name[: -len(".lora_A.weight")] for name in names if name.endswith(".lora_A.weight")):
        a_name, b_name = f"{module}.lora_A.weight", f"{module}.lora_B.weight"
        dtype = parts[0].tensors[a_name].dtype
        a_list = [part.tensors[a_name].float() for part in parts]
        b_list = [part.tensors[b_name].float() for part in parts]
        if how == "cat":  # [B1 B2] @ [s1 A1; s2 A2] = s1 B1 A1 + s2 B2 A2, exactly
            a = torch.cat([s * a for s, a in zip(scaled, a_list)], dim=0)
            b = torch.cat(b_list, dim=1)
        elif how == "linear":  # sqrt of the weight on each side, the sign on A
            a = sum(math.copysign(math.sqrt(abs(s)), s) * a for s, a in zip(scaled, a_list))
            b = sum(math.sqrt(abs(s)) * b for s, b in zip(scaled, b_list))
        else:  # svd: the exact sum of updates, truncated to ``rank``
            delta = sum(s * (b @ a) for s, a, b in zip(scaled, a_list, b_list))
            u, sigma, vh = torch.linalg.svd(delta, full_matrices=False)
            b = u[:, :rank] * sigma[:rank]
            a = vh[:rank]
        combined[a_name] = a.to(dtype).contiguous()
        combined[b_name] = b.to(dtype).contiguous()
    config = dataclasses.replace(
        parts[0].config, r=rank, lora_alpha=rank, use_rslora=False, rank_pattern={}, alpha_pattern={}, inference_mode=True
    )
    return combined, config
