import json

import pytest

from lift_tool.documents import make_document
from lift_tool.errors import AbsorptionInterrupted, BudgetError, ConfigError, InputError
from lift_tool.memory.manifest import MANIFEST_FILE
from lift_tool.training.absorb import absorb
from lift_tool.training.backend import choose_backend

TEXT = """# Brimley

Brimley was founded in 1841 by the engineer Agatha Moorcroft. The canal is 14 kilometres long.
The Brimley Canal Company has twelve barges. A bridge called the Wendle Arch crosses the canal.
"""
QUICK = {"epochs": 0.5, "batch_tokens": 512}


def _settings(tiny_settings, **training):
    return tiny_settings.model_copy(update={"training": tiny_settings.training.model_copy(update={**QUICK, **training})})


def _logits(loaded):
    import torch

    ids = loaded.tokenizer("Brimley was founded", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return loaded.model(ids).logits


def test_absorb_writes_a_plain_peft_adapter_and_leaves_the_base_model_as_it_was(tiny_loaded, tiny_settings, tmp_path):
    import torch
    from peft import PeftModel

    before = _logits(tiny_loaded)
    out = tmp_path / "adapter"
    manifest = absorb(make_document(TEXT), tiny_loaded, _settings(tiny_settings), out, progress=False)

    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / MANIFEST_FILE).read_text()) == manifest.to_json()
    assert manifest.base_fingerprint == tiny_loaded.fingerprint
    assert manifest.backend == "peft" and manifest.steps > 0 and manifest.qa_pairs > 0
    assert manifest.losses["final"] is not None
    assert not any("lora" in name for name, _ in tiny_loaded.model.named_parameters())
    assert torch.equal(before, _logits(tiny_loaded))  # LoRA layers removed, weights restored to fp32

    adapted = PeftModel.from_pretrained(tiny_loaded.model, out)
    with torch.no_grad():
        changed = adapted(tiny_loaded.tokenizer("Brimley was founded", return_tensors="pt")["input_ids"]).logits
    assert not torch.allclose(before, changed)  # the adapter learnt something
    tiny_loaded.model = adapted.unload()

    from safetensors.torch import load_file

    names = list(load_file(out / "adapter_model.safetensors"))
    assert names and all(".layers.1." in name for name in names)  # the upper half of the 2 layers only
    assert manifest.settings["training"]["learning_rate"] == 4e-3  # chosen for a small model
    assert manifest.settings["lora"]["layer_fraction"] == 0.5
    assert manifest.settings["training"]["max_answer_share"] == 0.02
    # recorded as asked (layers and rate left to the model), so that asking again finds this adapter
    assert manifest.settings_fingerprint == _settings(tiny_settings).training_fingerprint()


def test_lora_goes_on_the_upper_layers():
    from lift_tool.config import LoraSettings

    assert LoraSettings(layer_fraction=0.5).adapted_layers(30) == list(range(15, 30))
    assert LoraSettings(layer_fraction=1.0).adapted_layers(2) == [0, 1]
    assert LoraSettings(layer_fraction=0.01).adapted_layers(24) == [23]  # never none
    with pytest.raises(ValueError, match="model size"):
        LoraSettings().adapted_layers(30)  # left to the model size, and not yet chosen


def test_settings_left_to_the_model_size_are_chosen_by_it():
    from types import SimpleNamespace

    import torch

    from lift_tool.config import Settings
    from lift_tool.training.recipe import settings_for_model

    def chosen_for(parameters_in, user: dict):
        loaded = SimpleNamespace(model=torch.nn.Linear(parameters_in, 1000, bias=False, device="meta"))  # no memory
        settings = settings_for_model(loaded, Settings.model_validate(user))
        return settings.lora.layer_fraction, settings.training.learning_rate, settings.training.max_answer_share

    assert chosen_for(1_000, {}) == (0.5, 4e-3, 0.02)  # 1M parameters: like the default model
    assert chosen_for(400_000, {}) == (1.0, 1e-3, 1.0)  # 400M parameters: like Qwen2.5-0.5B
    user = {"lora": {"layer_fraction": 0.25}, "training": {"learning_rate": 5e-4, "max_answer_share": 0.1}}
    assert chosen_for(400_000, user) == (0.25, 5e-4, 0.1)  # what the user set wins


def test_training_questions_keep_their_share_of_one_answer():
    from lift_tool.config import Settings
    from lift_tool.training.questions import QAPair
    from lift_tool.training.recipe import generate_qa

    class OneAnswerMostly:  # a question generator, as an LLM-based one plugs in
        def generate(self, text, title):
            return [QAPair(f"Who wrote part {n}?", "Brimley" if n < 50 else f"Writer {n}", 0, "echo") for n in range(100)]

    document = make_document(TEXT)
    for share, brimleys in ((0.02, 3), (0.1, 10), (1.0, 50)):
        settings = Settings.model_validate({"training": {"max_answer_share": share, "mix": {"unanswerable": 0}}})
        answers = [pair.answer for pair in generate_qa(document, settings, OneAnswerMostly())]
        assert answers.count("Brimley") == brimleys and len(answers) == 50 + brimleys


def test_same_seed_same_adapter(tiny_loaded, tiny_settings, tmp_path):
    from safetensors.torch import load_file

    settings = _settings(tiny_settings, epochs=0.3)
    absorb(make_document(TEXT), tiny_loaded, settings, tmp_path / "a", progress=False)
    absorb(make_document(TEXT), tiny_loaded, settings, tmp_path / "b", progress=False)
    a = load_file(tmp_path / "a" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_budget_stops_early_and_keeps_what_was_learnt(tiny_loaded, tiny_settings, tmp_path):
    import time

    settings = _settings(tiny_settings, epochs=50, budget_seconds=8)
    slow_steps = lambda report: time.sleep(0.5)  # noqa: E731 - so that the budget ends it on any machine
    manifest = absorb(make_document(TEXT), tiny_loaded, settings, tmp_path / "a", progress=False, on_step=slow_steps)
    assert manifest.stopped_by_budget and 0 < manifest.steps < manifest.planned_steps
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()


def test_an_adapter_cut_by_its_budget_records_the_share_of_the_document_it_covered(tiny_loaded, tiny_settings,
                                                                                   tmp_path):
    import time

    text = "# Ledger\n\n" + " ".join(f"Clerk {n} of Brimley kept ledger number {n * 7} in cabinet {n % 9}."
                                     for n in range(60))
    # One question per example and nothing else, so each step teaches a sentence or two; 2 s per step, so the
    # 20 s budget ends it after at most 10 steps of hundreds, on any machine.
    mix = tiny_settings.training.mix.model_copy(update={"segments": 0, "contextual": 0, "qa_long": 0})
    settings = _settings(tiny_settings, epochs=1, batch_tokens=96, budget_seconds=20, min_steps=0,
                         qa_per_conversation=1, mix=mix)
    slow_steps = lambda report: time.sleep(2)  # noqa: E731
    manifest = absorb(make_document(text), tiny_loaded, settings, tmp_path / "a", progress=False, on_step=slow_steps)
    assert manifest.stopped_by_budget and 0 < manifest.coverage < 1


def test_a_whole_absorption_covers_every_sentence_its_plan_teaches(tiny_loaded, tiny_settings, tmp_path):
    manifest = absorb(make_document(TEXT), tiny_loaded, _settings(tiny_settings), tmp_path / "a", progress=False)
    assert not manifest.stopped_by_budget and manifest.coverage == 1.0


def test_budget_too_small_for_one_step(tiny_loaded, tiny_settings, tmp_path):
    settings = _settings(tiny_settings, budget_seconds=1e-6)
    with pytest.raises(BudgetError, match="too small"):
        absorb(make_document(TEXT), tiny_loaded, settings, tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()


def test_interrupt_leaves_nothing_and_the_model_clean(tiny_loaded, tiny_settings, tmp_path):
    def interrupt(report):
        raise KeyboardInterrupt

    with pytest.raises(AbsorptionInterrupted):
        absorb(make_document(TEXT), tiny_loaded, _settings(tiny_settings), tmp_path / "a", progress=False, on_step=interrupt)
    assert not (tmp_path / "a").exists()
    assert not any("lora" in name for name, _ in tiny_loaded.model.named_parameters())


def _adapter_weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def _interrupt_at(step):
    def on_step(report):
        if report.step == step:
            raise KeyboardInterrupt

    return on_step


@pytest.mark.parametrize("written", [0, 2])
def test_an_interrupted_absorption_goes_on_from_its_checkpoint_to_the_same_adapter(tiny_loaded, tiny_settings,
                                                                                    tmp_path, written):
    """With questions the model writes itself, they are kept beside the checkpoint and read back."""
    import torch

    from lift_tool.training.checkpoint import WRITTEN_FILE

    # A checkpoint after every step.
    settings = _settings(tiny_settings, checkpoint_seconds=1e-9, written_questions=written)
    document, saved = make_document(TEXT), tmp_path / "checkpoint"
    with pytest.raises(AbsorptionInterrupted, match=r"saved at step 5 of \d+.*goes on from there"):
        absorb(document, tiny_loaded, settings, tmp_path / "a", progress=False, on_step=_interrupt_at(5),
               checkpoint_dir=saved)
    assert not (tmp_path / "a").exists() and (saved / "checkpoint.safetensors").is_file()
    assert (saved / WRITTEN_FILE).is_file() == (written > 0)
    assert not any("lora" in name for name, _ in tiny_loaded.model.named_parameters())

    steps = []
    resumed = absorb(document, tiny_loaded, settings, tmp_path / "b", progress=False, checkpoint_dir=saved,
                     on_step=lambda report: steps.append(report.step))
    whole = absorb(document, tiny_loaded, settings, tmp_path / "c", progress=False)
    assert resumed.resumed_at_step == 5 and steps[0] == 6 and resumed.steps == whole.steps == whole.planned_steps
    assert whole.resumed_at_step == 0 and resumed.tokens_trained == whole.tokens_trained
    assert resumed.losses == whole.losses
    mine, theirs = _adapter_weights(tmp_path / "b"), _adapter_weights(tmp_path / "c")
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[name], theirs[name]) for name in mine)  # as if it had never stopped


def test_a_checkpoint_of_other_training_or_a_damaged_one_is_not_resumed(tiny_loaded, tiny_settings, tmp_path):
    settings = _settings(tiny_settings, checkpoint_seconds=1e-9)
    document, saved = make_document(TEXT), tmp_path / "checkpoint"
    with pytest.raises(AbsorptionInterrupted):
        absorb(document, tiny_loaded, settings, tmp_path / "a", progress=False, on_step=_interrupt_at(3),
               checkpoint_dir=saved)
    other = _settings(tiny_settings, checkpoint_seconds=1e-9, learning_rate=1e-3)
    with pytest.raises(AbsorptionInterrupted, match="saved at step 2 of"):  # its own checkpoint replaces the other
        absorb(document, tiny_loaded, other, tmp_path / "b", progress=False, on_step=_interrupt_at(2),
               checkpoint_dir=saved)
    (saved / "checkpoint.safetensors").write_bytes(b"not a checkpoint")
    manifest = absorb(document, tiny_loaded, other, tmp_path / "c", progress=False, checkpoint_dir=saved)
    assert manifest.resumed_at_step == 0 and manifest.steps == manifest.planned_steps


def test_document_over_the_limit(tiny_loaded, tiny_settings, tmp_path):
    settings = tiny_settings.model_copy(update={"max_document_tokens": 10})
    with pytest.raises(InputError, match="over the limit"):
        absorb(make_document(TEXT), tiny_loaded, settings, tmp_path / "a", progress=False)


def test_backend_choice_on_cpu():
    assert choose_backend("auto", "cpu") == "peft"
    assert choose_backend("peft", "cpu") == "peft"
    with pytest.raises(ConfigError, match="CUDA"):
        choose_backend("unsloth", "cpu")


def test_lora_plus_gives_the_b_matrices_their_multiple_of_the_learning_rate(tiny_loaded, tiny_settings):
    import dataclasses
    import time

    import torch

    from lift_tool.training.absorb import setup, train

    first_steps = {}
    for ratio in (1.0, 4.0):
        plan = setup(make_document(TEXT), tiny_loaded, _settings(tiny_settings, lora_b_lr_ratio=ratio))
        plan = dataclasses.replace(plan, micro_batches=plan.micro_batches[:1], total_steps=1)
        model = plan.backend.attach(tiny_loaded, plan.settings)
        try:
            train(model, plan, tiny_loaded, time.monotonic(), False, None)
            first_steps[ratio] = {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}
        finally:
            plan.backend.detach(model, tiny_loaded)
    # B starts at zero, so the first step's gradients are the same in both runs (A's is zero): Adam's first update
    # is the learning rate times the same direction, and B moves exactly 4 times as far.
    b_names = [name for name in first_steps[1.0] if ".lora_B." in name]
    assert b_names and all(first_steps[1.0][name].abs().sum() > 0 for name in b_names)
    for name, weight in first_steps[1.0].items():
        expected = 4 * weight if name in b_names else weight
        assert torch.allclose(first_steps[4.0][name], expected, rtol=1e-5, atol=1e-9), name


def test_absorption_with_retrieved_passages_trains_on_the_document_cut_as_retrieval_cuts_it(tiny_loaded,
                                                                                            tiny_settings, tmp_path):
    from lift_tool.memory.retrieval import chunk_text, embedding_tokenizer
    from lift_tool.training.absorb import setup

    text = "# Ledger\n\n" + " ".join(f"Clerk {n} of Brimley kept ledger number {n * 7} in cabinet {n % 9}."
                                     for n in range(40))
    mix = tiny_settings.training.mix.model_copy(update={"qa_passages": 1.0})
    settings = _settings(tiny_settings, mix=mix)
    settings = settings.model_copy(update={"retrieval": settings.retrieval.model_copy(update={"chunk_tokens": 64,
                                                                                             "chunk_overlap": 16})})
    plan = setup(make_document(text), tiny_loaded, settings)
    chunks = chunk_text(text, embedding_tokenizer(), 64, 16)
    shown = [tiny_loaded.tokenizer.decode(example.input_ids) for batch in plan.micro_batches for example in batch
             if example.kind == "qa_passages"]
    assert shown and all(sum(chunk.text in prompt for chunk in chunks) >= settings.retrieval.k for prompt in shown)
    manifest = absorb(make_document(text), tiny_loaded, settings, tmp_path / "a", progress=False)
    assert manifest.coverage == 1.0 and (tmp_path / "a" / "adapter_model.safetensors").is_file()
