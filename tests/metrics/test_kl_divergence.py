"""KL(P_base || P_tuned) drift: zero for identical models, monotone in perturbation, PEFT path, batching."""

from __future__ import annotations

import pytest
import torch

from domainsmith.data.chat_format import prompt_ids, tokenize_conversation
from domainsmith.evaluate.kl_divergence import chat_sequences, mean_token_kl

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime number."}],
    [{"role": "user", "content": "2 + 2 = ?"}],
]
ANSWERS = ["The capital of France is Paris.", "Seven.", "Four, as everyone knows."]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def sequences(tok):
    return chat_sequences(tok, CHATS, ANSWERS)


def _load(tiny_model_dir):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(tiny_model_dir)


def _perturbed(tiny_model_dir, scale: float):
    model = _load(tiny_model_dir)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model


def test_chat_sequences_score_the_answer_and_end_of_turn_as_trained(tok, sequences):
    for chat, answer, (ids, score_from) in zip(CHATS, ANSWERS, sequences, strict=True):
        assert ids[:score_from] == prompt_ids(tok, chat)  # the prompt exactly as generation sees it
        assert tok.decode(ids[score_from:]) == answer + "<|im_end|>"
        assert ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")
        # The scored tokens are the tokens training learns for this answer.
        example = tokenize_conversation(tok, [*chat, {"role": "assistant", "content": answer}], 4096)
        assert [t for t in example.labels if t != -100] == ids[score_from:]
    with pytest.raises(ValueError, match="2 chats but 3 answers"):
        chat_sequences(tok, CHATS[:2], ANSWERS)


def test_identical_models_have_zero_kl(tiny_model_dir, tok, sequences):
    result = mean_token_kl(_load(tiny_model_dir), tok, sequences, base_model=_load(tiny_model_dir))
    assert abs(result["kl_per_token"]) <= 1e-6
    assert result["tokens"] == sum(len(ids) - start for ids, start in sequences)
    assert result["sequences"] == 3 and len(result["per_sequence"]) == 3


def test_kl_grows_with_the_size_of_the_perturbation(tiny_model_dir, tok, sequences):
    base = _load(tiny_model_dir)
    small = mean_token_kl(_perturbed(tiny_model_dir, 1e-3), tok, sequences, base_model=base)["kl_per_token"]
    large = mean_token_kl(_perturbed(tiny_model_dir, 1e-2), tok, sequences, base_model=base)["kl_per_token"]
    assert 0 < small < large
    assert large > 10 * small  # KL is roughly quadratic in a small perturbation


def test_peft_disable_adapter_path_equals_the_two_model_path(tiny_model_dir, tok, sequences):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(3)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    peft_model = get_peft_model(_load(tiny_model_dir), config)
    one_copy = mean_token_kl(peft_model, tok, sequences)  # base distribution with the adapter disabled
    merged = peft_model.merge_and_unload()
    two_models = mean_token_kl(merged, tok, sequences, base_model=_load(tiny_model_dir))
    assert one_copy["kl_per_token"] > 1e-4  # the adapter really changes the model
    assert one_copy["kl_per_token"] == pytest.approx(two_models["kl_per_token"], abs=1e-5)
    assert one_copy["per_sequence"] == pytest.approx(two_models["per_sequence"], abs=1e-5)


def test_batch_size_does_not_change_the_result(tiny_model_dir, tok, sequences):
    tuned, base = _perturbed(tiny_model_dir, 1e-2), _load(tiny_model_dir)
    seen: list[int] = []
    one = mean_token_kl(tuned, tok, sequences, base_model=base, batch_size=1)
    three = mean_token_kl(tuned, tok, sequences, base_model=base, batch_size=3, on_batch=seen.append)
    # Padding changes matmul shapes, hence fp32 rounding (~1e-7 here on KLs of ~1e-2), never more.
    assert one["kl_per_token"] == pytest.approx(three["kl_per_token"], abs=1e-6)
    assert one["per_sequence"] == pytest.approx(three["per_sequence"], abs=1e-6)
    assert one["kl_per_token"] > 1e-3
    assert sum(seen) == 3


def test_argument_errors(tiny_model_dir, tok, sequences):
    model = _load(tiny_model_dir)
    with pytest.raises(ValueError, match="base_model is required"):
        mean_token_kl(model, tok, sequences)
    with pytest.raises(ValueError, match="score_from"):
        mean_token_kl(model, tok, [([1, 2, 3], 3)], base_model=model)
    with pytest.raises(ValueError, match="score_from"):
        mean_token_kl(model, tok, [([1, 2, 3], 0)], base_model=model)
