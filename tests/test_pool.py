"""The adapter pool on the tiny model: real PEFT adapters, compared with what PEFT itself computes."""

from __future__ import annotations

import random
import threading
import weakref
from pathlib import Path

import pytest
from helpers_adapters import build_lora, store_adapter

from lift_tool.errors import CorruptAdapterError, IncompatibleAdapterError
from lift_tool.memory import pool as pool_module
from lift_tool.memory.pool import AdapterPool
from lift_tool.memory.registry import Registry

TEXTS = {name: f"Document {name}: " + f"facts about {name}. " * 30 for name in ("one", "two", "three", "wide")}
PROMPT = "The quick brown fox jumps over the lazy dog because"


@pytest.fixture(scope="session")
def lora_sources(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Three rank-4 adapters and one rank-8 adapter, all on every projection of the tiny model."""
    sources = {}
    for seed, name in enumerate(("one", "two", "three"), start=11):
        sources[name] = build_lora(tiny_model_dir, tmp_path_factory.mktemp(f"lora-{name}"), seed=seed)
    sources["wide"] = build_lora(tiny_model_dir, tmp_path_factory.mktemp("lora-wide"), seed=14, rank=8)
    return sources


@pytest.fixture
def registry(lift_home) -> Registry:
    return Registry(lift_home)


@pytest.fixture
def entries(registry, tiny_loaded, lora_sources):
    return {
        name: store_adapter(registry, source, TEXTS[name], f"Doc {name}", tiny_loaded.fingerprint)
        for name, source in lora_sources.items()
    }


@pytest.fixture
def input_ids(tiny_loaded):
    return tiny_loaded.tokenizer(PROMPT, return_tensors="pt").input_ids


def logits_of(model, input_ids):
    import torch

    with torch.no_grad():
        return model(input_ids=input_ids).logits


def peft_reference(model_dir, input_ids, paths, weights=None, how=None):
    """What PEFT computes on a fresh copy of the model: one adapter, or PEFT's own add_weighted_adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), str(paths[0]), adapter_name="p0")
    for i, path in enumerate(paths[1:], start=1):
        model.load_adapter(str(path), adapter_name=f"p{i}")
    if how is not None:
        model.add_weighted_adapter([f"p{i}" for i in range(len(paths))], weights, "mix", combination_type=how)
        model.set_adapter("mix")
    model.eval()
    return logits_of(model, input_ids)


@pytest.mark.parametrize("flag_only", [True, False], ids=["flag", "public-enable"])
def test_activate_switches_adapters_and_leaves_the_base_model_alone(
    tiny_loaded, tiny_model_dir, registry, entries, input_ids, flag_only, monkeypatch
):
    import torch

    if not flag_only:  # the path taken where PEFT's layer flag is not the one its forward reads
        monkeypatch.setattr(pool_module, "_flag_reaches_forward", lambda layer: False)

    model = tiny_loaded.model
    base_logits = logits_of(model, input_ids)
    pool = AdapterPool(model, tiny_loaded.fingerprint, registry, capacity=4)
    with pool.base() as m:  # nothing loaded yet: the bare model
        assert m is model and not any("lora" in name for name, _ in model.named_parameters())
        assert torch.equal(logits_of(m, input_ids), base_logits)

    with pool.activate(entries["one"]) as m:
        one = logits_of(m, input_ids)
    with pool.activate(entries["two"]) as m:
        two = logits_of(m, input_ids)
    assert not torch.allclose(one, two, atol=1e-3)
    assert not torch.allclose(one, base_logits, atol=1e-3) and not torch.allclose(two, base_logits, atol=1e-3)
    # The same numbers PEFT's own loader gives.
    torch.testing.assert_close(one, peft_reference(tiny_model_dir, input_ids, [entries["one"].path]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(two, peft_reference(tiny_model_dir, input_ids, [entries["two"].path]), rtol=1e-5, atol=1e-5)

    with pool.base() as m:
        assert torch.equal(logits_of(m, input_ids), base_logits)
    assert torch.equal(logits_of(model, input_ids), base_logits)  # outside any block: the base model
    with pool.activate(entries["one"]) as m:  # switching back is exact
        assert torch.equal(logits_of(m, input_ids), one)
        generated = m.generate(input_ids, max_new_tokens=4, do_sample=False)
        assert generated.shape[1] == input_ids.shape[1] + 4
    assert pool.resident() == [entries["two"].key, entries["one"].key]


def test_least_recently_used_adapter_is_evicted_and_freed(tiny_loaded, registry, entries, input_ids):
    import torch

    pool = AdapterPool(tiny_loaded.model, tiny_loaded.fingerprint, registry, capacity=2)
    with pool.activate(entries["one"]) as m:
        one = logits_of(m, input_ids)
    one_tensor = weakref.ref(next(iter(pool._resident[entries["one"].key].tensors.values())))
    per_adapter = pool.resident_bytes()
    assert per_adapter > 0
    for name in ("two", "one", "three"):  # "one" used again, so "two" is now the oldest
        with pool.activate(entries[name]):
            pass
    assert pool.resident() == [entries["one"].key, entries["three"].key]
    with pool.activate(entries["two"]):
        pass
    assert pool.resident() == [entries["three"].key, entries["two"].key]
    assert one_tensor() is None  # evicted means released, not merely forgotten
    assert pool.resident_bytes() == 2 * per_adapter
    with pool.activate(entries["one"]) as m:  # loaded again from disk, same result
        assert torch.equal(logits_of(m, input_ids), one)


def test_a_configuration_nobody_uses_any_more_is_deleted_from_the_model(tiny_loaded, registry, entries, input_ids):
    pool = AdapterPool(tiny_loaded.model, tiny_loaded.fingerprint, registry, capacity=1)
    with pool.activate(entries["one"]):
        pass
    with pool.activate(entries["wide"]):  # rank 8: another slot; the rank-4 one goes with "one"
        pass
    assert pool.resident() == [entries["wide"].key]
    assert len(pool._peft.peft_config) == 1
    assert not any(".lora_A." in name and param.shape[0] == 4 for name, param in tiny_loaded.model.named_parameters())


def test_adapter_of_another_base_model_is_refused(tiny_loaded, registry, lora_sources, input_ids):
    import torch

    foreign = store_adapter(registry, lora_sources["one"], TEXTS["one"], "Foreign", "llama-some-other-model", base_model="Other-1B")
    base_logits = logits_of(tiny_loaded.model, input_ids)
    pool = AdapterPool(tiny_loaded.model, tiny_loaded.fingerprint, registry)
    with pytest.raises(IncompatibleAdapterError, match="trained on Other-1B"):
        with pool.activate(foreign):
            pass
    assert pool.resident() == []
    assert torch.equal(logits_of(tiny_loaded.model, input_ids), base_logits)


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_damaged_adapter_is_refused(tiny_loaded, registry, entries, input_ids, damage):
    weights = entries["two"].path / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-7] + bytes([data[-7] ^ 0x55]) + data[-6:] if damage == "flipped byte" else data[:-64])
    pool = AdapterPool(tiny_loaded.model, tiny_loaded.fingerprint, registry)
    with pytest.raises(CorruptAdapterError, match="adapter for 'Doc two' is damaged"):
        with pool.activate(entries["two"]):
            pass
    assert pool.resident() == []
    with pool.activate(entries["one"]):  # the others still work
        pass
    assert pool.resident() == [entries["one"].key]


@pytest.mark.parametrize("how, weights", [("cat", [0.7, 0.5]), ("linear", [0.7, -0.4]), ("svd", [1.0, 0.5])])
def test_combine_computes_what_peft_computes(tiny_loaded, tiny_model_dir, registry, entries, input_ids, how, weights):
    import torch

    pool = AdapterPool(tiny_loaded.model, tiny_loaded.fingerprint, registry, capacity=4)
    parts = [entries["one"], entries["two"]]
    with pool.combine(parts, weights, how=how) as m:
        combined = logits_of(m, input_ids)
    expected = peft_reference(tiny_model_dir, input_ids, [e.path for e in parts], weights, how)
    torch.testing.assert_close(combined, expected, rtol=1e-4, atol=1e-4)
    with pool.activate(entries["one"]) as m:
        assert not torch.allclose(logits_of(m, input_ids), combined, atol=1e-3)
    resident = pool.resident()
    assert len(resident) == 3 and resident[1].startswith("mix-")
    with pool.combine(parts, weights, how=how) as m:  # cached: nothing is loaded or built again
        assert torch.equal(logits_of(m, input_ids), combined)
    assert sorted(pool.resident()) == sorted(resident)


def test_combine_adapters_of_different_rank(tiny_loaded, tiny_model_dir, registry, entries, input_ids):
    import torch

    pool = AdapterPool(tiny_loaded.model, tiny_loaded.fingerprint, registry)
    parts = [entries["one"], entries["wide"]]
    with pool.combine(parts, [1.0, 1.0], how="cat") as m:
        combined = logits_of(m, input_ids)
    expected = peft_reference(tiny_model_dir, input_ids, [e.path for e in parts], [1.0, 1.0], "cat")
    torch.testing.assert_close(combined, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(IncompatibleAdapterError, match="ranks differ"):
        with pool.combine(parts, how="linear"):
            pass
    with pool.combine([entries["one"], entries["two"]], [1.0, 0.0]) as m:  # a zero weight drops a part
        with_zero = logits_of(m, input_ids)
    with pool.activate(entries["one"]) as m:
        torch.testing.assert_close(with_zero, logits_of(m, input_ids), rtol=1e-5, atol=1e-5)


def test_threads_get_the_same_results_as_one_after_another(tiny_loaded, registry, entries, input_ids):
    import torch

    pool = AdapterPool(tiny_loaded.model, tiny_loaded.fingerprint, registry, capacity=2)  # evictions happen too
    choices = ["one", "two", "three", "base"]

    def run(choice):
        block = pool.base() if choice == "base" else pool.activate(entries[choice])
        with block as m:
            return logits_of(m, input_ids)

    sequential = {choice: run(choice) for choice in choices}
    results: list[tuple[str, object]] = []
    errors: list[BaseException] = []

    def worker(seed: int):
        rng = random.Random(seed)
        try:
            for _ in range(12):
                choice = rng.choice(choices)
                results.append((choice, run(choice)))
        except BaseException as err:  # reported below: an exception in a thread would otherwise vanish
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 48
    for choice, logits in results:
        assert torch.equal(logits, sequential[choice]), choice


def test_blocks_do_not_nest(tiny_loaded, registry, entries):
    pool = AdapterPool(tiny_loaded.model, tiny_loaded.fingerprint, registry)
    with pool.activate(entries["one"]):
        with pytest.raises(RuntimeError, match="do not nest"):
            with pool.activate(entries["two"]):
                pass
        with pytest.raises(RuntimeError, match="do not nest"):
            with pool.base():
                pass
    with pool.activate(entries["two"]):  # the pool is usable afterwards
        pass
    assert pool.evict(entries["one"].key) and pool.resident() == [entries["two"].key]
    pool.clear()
    assert pool.resident() == [] and pool.resident_bytes() == 0


@pytest.mark.parametrize("rank", [100_000, 0])
def test_a_rank_no_layer_can_use_is_refused_before_any_layer_is_built(tiny_loaded, registry, entries, rank):
    """A config edited to rank 100,000 (its checksums recomputed, as an archive could carry it) made the pool
    build the LoRA layers first: hundreds of megabytes, then a raw RuntimeError."""
    import json

    from lift_tool.memory.registry.integrity import write_checksums

    entry = entries["one"]
    config_path = entry.path / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["r"] = rank
    config_path.write_text(json.dumps(config))
    write_checksums(entry.path)
    pool = AdapterPool(tiny_loaded.model, tiny_loaded.fingerprint, registry)
    with pytest.raises(IncompatibleAdapterError, match="LoRA rank"):
        with pool.activate(entry):
            pass
    assert pool.resident() == [] and not any("lora_" in name for name, _ in tiny_loaded.model.named_parameters())


@pytest.mark.parametrize("damage", ["garbage", "nan", "inf"])
def test_weights_that_are_not_numbers_are_caught_by_verify_and_refused_by_the_pool(tiny_loaded, registry, entries,
                                                                                  damage):
    """Weights replaced and their checksums recomputed: the files are "intact", the numbers are not. `ask` crashed
    with a raw SafetensorError, NaN weights loaded, and `verify` called both intact."""
    import torch
    from safetensors.torch import load_file, save_file

    from lift_tool.memory.registry.integrity import write_checksums

    entry = entries["one"]
    weights = entry.path / "adapter_model.safetensors"
    if damage == "garbage":
        weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}" + bytes(64))
    else:
        tensors = load_file(weights)
        name = sorted(tensors)[0]
        tensors[name][0, 0] = float("nan") if damage == "nan" else float("inf")
        save_file(tensors, weights)
    write_checksums(entry.path)
    report = registry.verify()
    assert list(report.damaged) == [entry.key], report.problems()
    pool = AdapterPool(tiny_loaded.model, tiny_loaded.fingerprint, registry)
    with pytest.raises(CorruptAdapterError, match="lift verify --repair"):
        with pool.activate(entry):
            pass
    assert pool.resident() == []
    assert registry.verify(repair=True).repaired and registry.verify().ok  # repair removes it; the others stay
    assert len(registry.list_documents()) == len(entries)
