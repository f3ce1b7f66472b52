"""The frozen layers below the adapter run once per repeated example, and skipping them changes nothing."""

import random

from lift_tool.documents import make_document
from lift_tool.training.absorb import absorb
from lift_tool.training.layer_cache import FrozenLayerCache
from lift_tool.training.loop import batch_loss
from lift_tool.training.tasks import IGNORE, Example

TEXT = """# Brimley

Brimley was founded in 1841 by the engineer Agatha Moorcroft. The canal is 14 kilometres long.
The Brimley Canal Company has twelve barges. A bridge called the Wendle Arch crosses the canal.
The town's market is held on Thursdays in Moorcroft Square. The Wendle Arch was built of red sandstone in 1852.
"""


def _settings(tiny_settings, **training):
    # fp32: the test is about the cache, not the number format; both runs use the same one.
    # The same chats every pass (regroup_questions off): what makes repeats that the cache can serve.
    update = {"precision": "fp32", "min_steps": 6, "batch_tokens": 512, "regroup_questions": False, **training}
    return tiny_settings.model_copy(update={"training": tiny_settings.training.model_copy(update=update)})


def _example(length: int, seed: int) -> Example:
    rng = random.Random(seed)
    ids = [rng.randrange(100, 1000) for _ in range(length)]
    return Example("qa", ids, [IGNORE] * (length // 2) + ids[length // 2 :])


def _attach(tiny_loaded, settings):
    from lift_tool.training.peft_backend import PeftBackend
    from lift_tool.training.recipe import settings_for_model

    settings = settings_for_model(tiny_loaded, settings)
    model = PeftBackend().attach(tiny_loaded, settings)
    first = settings.lora.adapted_layers(tiny_loaded.model.config.num_hidden_layers)[0]
    return model, first


def _loss_and_grads(model, batch, pad_id, cache=None):
    model.zero_grad(set_to_none=True)
    loss, _ = batch_loss(model, batch, pad_id, cache)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    return loss.detach(), grads


def test_a_repeated_batch_skips_the_frozen_layers_with_the_same_loss_and_gradients(tiny_loaded, tiny_settings):
    import torch

    model, first = _attach(tiny_loaded, _settings(tiny_settings))
    body = model.get_base_model().base_model
    assert first > 0 and FrozenLayerCache.applies(body, first)
    batch = [_example(40, 1), _example(25, 2)]  # unequal lengths: the shorter one is padded
    pad_id = tiny_loaded.tokenizer.pad_token_id
    plan = [batch, batch]
    cache = FrozenLayerCache(body, first, plan, max_bytes=2**30)

    plain_loss, plain_grads = _loss_and_grads(model, batch, pad_id)
    first_loss, _ = _loss_and_grads(model, batch, pad_id, cache)  # stores
    assert cache.hits == 0 and len(cache.stored) == 2
    calls = []
    hook = body.layers[0].register_forward_hook(lambda *args: calls.append(1))
    try:
        cached_loss, cached_grads = _loss_and_grads(model, batch, pad_id, cache)  # skips the layers below
    finally:
        hook.remove()
    assert cache.hits == 2 and calls == []
    torch.testing.assert_close(first_loss, plain_loss)
    torch.testing.assert_close(cached_loss, plain_loss)
    for cached, plain in zip(cached_grads, plain_grads):
        torch.testing.assert_close(cached, plain)


def test_the_cache_keeps_only_repeated_examples_within_its_limit(tiny_loaded, tiny_settings):
    model, first = _attach(tiny_loaded, _settings(tiny_settings))
    body = model.get_base_model().base_model
    once, twice, big = _example(30, 1), _example(30, 2), _example(200, 3)
    hidden = body.config.hidden_size
    limit = 100 * hidden * 4  # room for the 30-token example in float32, not for the 200-token one
    cache = FrozenLayerCache(body, first, [[once], [twice], [twice], [big], [big]], max_bytes=limit)
    pad_id = tiny_loaded.tokenizer.pad_token_id
    for batch in ([once], [twice], [big]):
        batch_loss(model, batch, pad_id, cache)
    assert set(cache.stored) == {id(twice)}
    assert cache.stored_bytes <= limit


def test_an_absorption_with_the_cache_trains_the_same_adapter_with_fewer_passes_through_the_lower_layers(
        tiny_loaded, tiny_settings, tmp_path):
    import torch
    from safetensors.torch import load_file

    document = make_document(TEXT)
    mix = tiny_settings.training.mix.model_copy(update={"qa": 3.0})  # every conversation three times
    folders, lower_layer_calls = {}, {}
    for megabytes in (0, 64):
        settings = _settings(tiny_settings, frozen_layer_cache_mb=megabytes, mix=mix)
        folders[megabytes] = tmp_path / f"cache-{megabytes}"
        calls = []
        hook = tiny_loaded.model.model.layers[0].register_forward_hook(lambda *args: calls.append(1))
        try:
            absorb(document, tiny_loaded, settings, folders[megabytes], progress=False)
        finally:
            hook.remove()
        lower_layer_calls[megabytes] = len(calls)
    assert lower_layer_calls[64] < lower_layer_calls[0]
    without = load_file(folders[0] / "adapter_model.safetensors")
    with_cache = load_file(folders[64] / "adapter_model.safetensors")
    assert without.keys() == with_cache.keys()
    for name in without:
        torch.testing.assert_close(with_cache[name], without[name])
