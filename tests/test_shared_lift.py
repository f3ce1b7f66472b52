"""shared_lift: one loaded model for memories that differ only in where they live, and a bounded cache."""

from __future__ import annotations

import gc

import pytest

import lift_tool.lift as lift_module
from lift_tool.lift import shared_lift


@pytest.fixture(autouse=True)
def empty_cache():
    lift_module._SHARED.clear()
    yield
    lift_module._SHARED.clear()


def test_memories_on_one_model_share_the_loaded_model(tiny_settings, tmp_path):
    first = shared_lift(tiny_settings)
    assert shared_lift(tiny_settings) is first  # the same settings: the same Lift
    other_home = shared_lift(tiny_settings.model_copy(update={"home": tmp_path / "other-home"}))
    training = tiny_settings.training.model_copy(update={"epochs": 0.5})
    other_training = shared_lift(tiny_settings.model_copy(update={"training": training}))

    assert other_home is not first and other_home.registry.home != first.registry.home  # its own memory
    assert other_home.host is first.host and other_training.host is first.host
    assert other_home.loaded is first.loaded is other_training.loaded  # loaded once
    assert other_home.lock is first.lock  # one generation at a time on the one model
    assert other_home.pool is first.pool  # its LoRA layers live in that model

    other_dtype = shared_lift(tiny_settings.model_copy(update={"dtype": "bfloat16"}))
    assert other_dtype.host is not first.host  # another model


def test_the_cache_keeps_the_most_recently_used_lifts(tiny_settings, tmp_path):
    settings = [tiny_settings.model_copy(update={"home": tmp_path / f"home-{i}", "shared_lifts": 2}) for i in range(3)]
    a, b = shared_lift(settings[0]), shared_lift(settings[1])
    assert shared_lift(settings[0]) is a  # used again: now the most recent
    shared_lift(settings[2])  # over the limit of 2: b, the least recently used, goes
    assert len(lift_module._SHARED) == 2
    assert shared_lift(settings[0]) is a
    assert shared_lift(settings[1]) is not b  # made again


def test_a_model_no_kept_lift_uses_is_freed(tiny_settings, tmp_path):
    import weakref

    other_model = tiny_settings.model_copy(update={"dtype": "bfloat16", "shared_lifts": 1})
    first = shared_lift(other_model)
    model = weakref.ref(first.loaded.model)
    del first
    kept = shared_lift(tiny_settings.model_copy(update={"shared_lifts": 1}))  # the first Lift is dropped
    gc.collect()
    assert model() is None  # and with it its model
    assert kept.host in lift_module._HOSTS.values()
