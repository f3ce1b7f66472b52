import json
import multiprocessing
import shutil
from pathlib import Path

import pytest

from lift_tool.config import Settings, load_settings
from lift_tool.errors import ConfigError, ModelError
from lift_tool.models import (
    FINGERPRINT_FILE,
    cpu_has_bf16_kernels,
    fingerprint_folder,
    load_model,
    pick_dtype,
    resolve_spec,
)
from lift_tool.models.cpu_decoding import PACKED_DECODE_ATTENTION, _lay_out_on_its_own, _packed_decode_attention
from lift_tool.models.device import cpuinfo_has_native_bf16


def test_load_local_folder_has_fingerprint_and_window(tiny_loaded, tiny_model_dir):
    assert tiny_loaded.fingerprint.startswith("llama-")
    assert tiny_loaded.context_window == 1024
    assert tiny_loaded.path == tiny_model_dir.resolve()
    assert str(tiny_loaded.model.device) == "cpu"


def test_cpu_answers_in_bf16_only_where_the_cpu_has_bf16_kernels(tiny_model_dir, lift_home):
    import torch

    assert pick_dtype("cpu") == (torch.bfloat16 if cpu_has_bf16_kernels() else torch.float32)
    assert pick_dtype("cpu", "float32") == torch.float32  # asked for: always honoured
    loaded = load_model(settings=Settings(model=str(tiny_model_dir), home=lift_home, device="cpu"))
    assert loaded.model.dtype == pick_dtype("cpu")


X86_FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ht syscall nx lm avx avx2 fma"
AVX512 = " avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni"


@pytest.mark.parametrize(
    "cpuinfo, native",
    [
        (f"processor\t: 0\nflags\t\t: {X86_FLAGS}\n", False),  # AVX2 only
        (f"processor\t: 0\nflags\t\t: {X86_FLAGS}{AVX512}\n", False),  # AVX-512 without bf16: emulated
        (f"processor\t: 0\nflags\t\t: {X86_FLAGS}{AVX512} avx512_bf16\n", True),  # Zen 4, Cooper Lake
        (f"processor\t: 0\nflags\t\t: {X86_FLAGS}{AVX512} amx_bf16 amx_tile amx_int8\n", True),  # Sapphire Rapids
        ("processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics i8mm bf16 sve\n", True),
        ("processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n", False),  # Graviton 2
        ("processor\t: 0\nmodel name\t: a bf16 avx512_bf16 lookalike\n", False),  # only flag lines count
        ("", False),
    ],
)
def test_bf16_is_native_only_with_bf16_instructions(cpuinfo, native):
    assert cpuinfo_has_native_bf16(cpuinfo) is native


def test_one_new_token_attends_as_transformers_sdpa_does(tiny_loaded):
    """The packed decoding attention (query heads as rows of their key/value head) is the same sum as
    transformers' SDPA with grouped-query attention; a loaded CPU model uses it."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    layer = tiny_loaded.model.model.layers[0].self_attn
    assert tiny_loaded.model.config._attn_implementation == PACKED_DECODE_ATTENTION
    torch.manual_seed(0)
    query = torch.randn(2, 4, 1, 16)  # batch 2, 4 query heads, one new token
    key, value = torch.randn(2, 2, 30, 16), torch.randn(2, 2, 30, 16)  # 2 key/value heads, 30 cached tokens
    packed, _ = _packed_decode_attention(layer, query, key, value, None, scaling=0.25)
    plain, _ = sdpa_attention_forward(layer, query, key, value, None, scaling=0.25)
    assert packed.shape == plain.shape == (2, 1, 4, 16)
    torch.testing.assert_close(packed, plain, rtol=1e-5, atol=1e-6)

    prompt = torch.tensor([[1, 5, 9, 200, 31, 7]])

    def greedy():
        out = tiny_loaded.model.generate(prompt, max_new_tokens=6, do_sample=False, output_scores=True,
                                         return_dict_in_generate=True, pad_token_id=0)
        return out.sequences, torch.stack(out.scores)

    packed_tokens, packed_scores = greedy()
    tiny_loaded.model.set_attn_implementation("sdpa")
    plain_tokens, plain_scores = greedy()
    assert torch.equal(packed_tokens, plain_tokens)
    torch.testing.assert_close(packed_scores, plain_scores, rtol=1e-5, atol=1e-5)


def test_output_layer_reads_a_slice_as_its_own_copy():
    """The bf16 output layer's pre-hook copies a slice of a longer sequence (the last position of a prompt)
    into the usual layout, numbers unchanged, and leaves whole sequences alone."""
    import torch

    hidden = torch.randn(1, 80, 32, dtype=torch.bfloat16)
    last = hidden[:, -1:]
    (copied,) = _lay_out_on_its_own(None, (last,))
    assert last.stride() == (80 * 32, 32, 1) and copied.stride() == (32, 32, 1)
    assert torch.equal(copied, last)
    assert _lay_out_on_its_own(None, (hidden,)) is None


def test_fingerprint_changes_with_weights(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert fingerprint_folder(copy) == fingerprint_folder(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(copy)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] += 1.0
    model.save_pretrained(copy)
    assert fingerprint_folder(copy) != fingerprint_folder(tiny_model_dir)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no-such-model", "unknown model"),
        ("./missing-folder", "model not found"),
        ("/nonexistent/model.gguf", "model file not found"),
    ],
)
def test_bad_specs_are_clear_errors(spec, message):
    with pytest.raises(ModelError, match=message):
        resolve_spec(spec, Settings())


def test_folder_without_config_is_an_error(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_spec(str(tmp_path), Settings())


def test_hub_id_without_hub_says_to_use_a_local_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="local folder"):
        load_model("some-org/some-model-that-is-not-cached", Settings(device="cpu"))


def test_bad_setting_is_a_config_error():
    with pytest.raises(ConfigError):
        load_settings(training={"segment_tokens": 64, "segment_stride": 128})


def test_env_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("LIFT_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("LIFT_TRAINING__EPOCHS", "7")
    settings = load_settings()
    assert settings.home == tmp_path / "h"
    assert settings.training.epochs == 7


def _convert(gguf: str, target: str) -> str:
    from lift_tool.models import convert_gguf

    return str(convert_gguf(Path(gguf), Path(target)))


@pytest.mark.integration
@pytest.mark.slow
def test_two_processes_converting_at_once_leave_one_complete_folder(tmp_path):
    from lift_tool.models import BUNDLED

    gguf = BUNDLED["smollm2-135m"].locate_gguf(Settings())
    target = tmp_path / "models" / "smollm2"
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        results = pool.starmap(_convert, [(str(gguf), str(target))] * 2)
    assert results == [str(target)] * 2
    assert json.loads((target / FINGERPRINT_FILE).read_text())["fingerprint"].startswith("llama-")
    leftovers = [p.name for p in target.parent.iterdir() if p.name not in {"smollm2", "smollm2.lock"}]
    assert leftovers == []


def test_reply_reports_how_sure_the_model_was_of_its_least_sure_token(tiny_loaded):
    import torch

    from lift_tool.generation import generate_reply
    from lift_tool.prompts import messages, render

    model, tokenizer = tiny_loaded.model, tiny_loaded.tokenizer
    conversation = messages("Who founded Brimley?", ["Brimley"])
    prompt = tokenizer(render(tokenizer, conversation, True), return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        next_token = torch.softmax(model(**prompt).logits[0, -1].float(), dim=-1)
    one = generate_reply(model, tokenizer, conversation, max_new_tokens=1)
    # Greedy: the one token chosen is the likeliest, so its probability is the largest of the next-token ones.
    assert one.least_token_probability == pytest.approx(next_token.max().item(), rel=1e-4)
    longer = generate_reply(model, tokenizer, conversation, max_new_tokens=6)
    assert longer.text.startswith(one.text) and longer.least_token_probability <= one.least_token_probability


@pytest.mark.slow
def test_replies_written_in_one_batch_are_those_written_one_at_a_time(real_loaded):
    import torch

    from lift_tool.generation import generate_replies, generate_reply
    from lift_tool.prompts import messages

    # The default model: the random tiny one writes only whitespace here.
    model, tokenizer = real_loaded.model, real_loaded.tokenizer
    # Prompts of different lengths: the shorter ones are padded on the left, which must change nothing.
    conversations = [messages("Who founded Brimley?", ["Brimley"]),
                     messages("In which year was the canal of the market town dug, and by whom?", ["Brimley"]),
                     messages("Where?", ["Brimley"], "Brimley is a market town on a canal.")]
    # In float32, where padding changes the shapes of the products but greedy decoding keeps the text. A CPU with
    # bf16 kernels loads the model in bf16, whose rounding differs between shapes by enough to change a token
    # (the tolerance argument of the prefix cache's test below); bf16 -> float32 -> bf16 restores it exactly.
    dtype = model.dtype
    model.to(torch.float32)
    try:
        one_at_a_time = [generate_reply(model, tokenizer, conversation, max_new_tokens=12).text
                         for conversation in conversations]
        assert all(one_at_a_time)
        assert generate_replies(model, tokenizer, conversations, max_new_tokens=12) == one_at_a_time
    finally:
        model.to(dtype)


@pytest.mark.slow
def test_reply_gives_up_at_its_first_unsure_token(real_loaded):
    from lift_tool.generation import generate_reply
    from lift_tool.prompts import messages

    # The default model: the random tiny one gives every token about the same (tiny) probability.
    model, tokenizer = real_loaded.model, real_loaded.tokenizer
    conversation = messages("Who founded Brimley, and when?", ["Brimley"],
                            "Brimley is a market town. It was founded in 1802 by Ada Brim, a miller from Leeds.")
    full = generate_reply(model, tokenizer, conversation, max_new_tokens=12)
    # The reply cut after 1, 2, ... tokens: the first cut as unsure as the whole reply ends at its least sure token.
    cuts = [generate_reply(model, tokenizer, conversation, max_new_tokens=n) for n in range(1, 13)]
    up_to_least_sure = next(c for c in cuts if c.least_token_probability == full.least_token_probability)
    assert len(up_to_least_sure.text) < len(full.text)  # the least sure token is not the last one

    given_up = generate_reply(model, tokenizer, conversation, max_new_tokens=12,
                              give_up_below=full.least_token_probability * 1.001)
    assert given_up.text == up_to_least_sure.text
    assert given_up.least_token_probability == pytest.approx(full.least_token_probability, rel=1e-4)
    # A threshold under every token's probability leaves the reply whole.
    assert generate_reply(model, tokenizer, conversation, max_new_tokens=12,
                          give_up_below=full.least_token_probability * 0.999).text == full.text


@pytest.mark.slow
def test_prefix_cache_reads_the_context_once_and_answers_the_same(real_loaded):
    import torch

    from lift_tool.generation import PrefixCache, generate_reply
    from lift_tool.prompts import messages, render

    model, tokenizer = real_loaded.model, real_loaded.tokenizer
    context = "Brimley is a market town. It was founded in 1802 by Ada Brim, a miller from Leeds. " * 4
    first = messages("Who founded Brimley?", ["Brimley"], context)
    second = messages("When was Brimley founded?", ["Brimley"], context)
    prompt_tokens = len(tokenizer(render(tokenizer, second, True), add_special_tokens=False)["input_ids"])
    context_tokens = len(tokenizer(context, add_special_tokens=False)["input_ids"])

    read: list[int] = []  # how many tokens each forward pass reads
    hook = model.get_input_embeddings().register_forward_hook(lambda module, args, output: read.append(args[0].shape[1]))
    cache = PrefixCache()
    try:
        uncached = generate_reply(model, tokenizer, second, max_new_tokens=12)
        assert read[0] == prompt_tokens
        generate_reply(model, tokenizer, first, max_new_tokens=12, prefix_cache=cache)  # reads the context once
        read.clear()
        cached = generate_reply(model, tokenizer, second, max_new_tokens=12, prefix_cache=cache)
    finally:
        hook.remove()
    # The second question's first pass reads what follows the context, not the context again.
    assert read[0] <= prompt_tokens - context_tokens
    assert cached.text == uncached.text
    # Reading the context in one pass or in two multiplies matrices of other shapes, which sum their terms in
    # another order: numbers may differ by rounding. Greedy decoding keeps the text; the least token probability
    # agrees to the rounding of the number format the model computes in. In each layer a product's result can
    # differ by one rounding of the format it is stored in, u (2^-24 in float32; 2^-8, about 0.4%, in bf16,
    # whose significand has 8 bits), plus a float32 sum of k terms taken in another order (at most k * 2^-24),
    # and this compounds over the layers: (1 + u + k * 2^-24) ** layers - 1 (the scale rounding allows, not a
    # proven bound). For SmolLM2-135M (30 layers, k up to 1,536) that is 0.28% in float32 and 13% in bf16.
    # Native bf16 (AVX512_BF16, AMX, Arm BF16) and bf16 emulated with float32 instructions (AVX-512F alone) both
    # sum in float32 and round each result to bf16, so the same tolerance holds for both: emulation costs time,
    # not precision. Measured: float32 1.9e-7 (AVX2); bf16 2.8% (AVX2, asked for) and 5.2% (AVX-512F without
    # AVX512_BF16, when bf16 was its default).
    config = model.config
    per_layer = torch.finfo(model.dtype).eps / 2 + max(config.hidden_size, config.intermediate_size) * 2.0 ** -24
    tolerance = (1 + per_layer) ** config.num_hidden_layers - 1
    assert cached.least_token_probability == pytest.approx(uncached.least_token_probability, rel=tolerance)
