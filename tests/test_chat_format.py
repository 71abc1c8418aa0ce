from domainsmith.data.chat_format import IGNORE_INDEX, prompt_ids, tokenize_conversation
from domainsmith.model_loading import load_tokenizer


def _decode_targets(tok, ex):
    return tok.decode([t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE_INDEX])


def test_only_assistant_tokens_carry_labels(default_tokenizer_dir):
    tok = load_tokenizer(str(default_tokenizer_dir))
    messages = [
        {"role": "user", "content": "Who makes Zorvil?"},
        {"role": "assistant", "content": "Halvorsen Pharma."},
        {"role": "user", "content": "And its dose?"},
        {"role": "assistant", "content": "35 mg."},
    ]
    ex = tokenize_conversation(tok, messages, max_seq_len=512)
    # Exactly the assistant contents plus their end-of-turn tokens, nothing of the prompt or template glue.
    assert _decode_targets(tok, ex) == "Halvorsen Pharma.<|im_end|>35 mg.<|im_end|>"
    # The full sequence is the model's own chat template, token for token.
    rendered = tok.apply_chat_template(messages, tokenize=False)
    assert tok.decode(ex.input_ids) == rendered
    assert not ex.truncated


def test_training_prompt_prefix_matches_inference_prompt(default_tokenizer_dir):
    tok = load_tokenizer(str(default_tokenizer_dir))
    messages = [{"role": "user", "content": "Who makes Zorvil?"}, {"role": "assistant", "content": "Halvorsen."}]
    ex = tokenize_conversation(tok, messages, max_seq_len=512)
    prompt = prompt_ids(tok, messages[:1])
    assert ex.input_ids[: len(prompt)] == prompt
    assert all(lab == IGNORE_INDEX for lab in ex.labels[: len(prompt)])
    assert ex.labels[len(prompt)] != IGNORE_INDEX


def test_truncation_is_reported(default_tokenizer_dir):
    tok = load_tokenizer(str(default_tokenizer_dir))
    messages = [{"role": "user", "content": "word " * 100}, {"role": "assistant", "content": "ok"}]
    ex = tokenize_conversation(tok, messages, max_seq_len=32)
    assert ex.truncated and len(ex.input_ids) == 32
