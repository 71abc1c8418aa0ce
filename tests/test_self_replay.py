from domainsmith.data.self_replay import pre_query_prefix, sample_user_turns, self_replay_pairs
from domainsmith.model_loading import load_causal_lm, load_tokenizer


def test_pre_query_prefix_is_the_template_up_to_the_user_text(default_tokenizer_dir):
    tok = load_tokenizer(str(default_tokenizer_dir))
    prefix = pre_query_prefix(tok)
    assert prefix.endswith("<|im_start|>user\n")
    assert "<|im_start|>system\n" in prefix  # the model's own default system turn is kept
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert rendered.startswith(prefix + "hi")


def test_sampling_is_bounded_reproducible_and_excludes_eval_questions(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir), padding_side="left")
    model = load_causal_lm(str(tiny_model_dir))
    first = sample_user_turns(model, tok, n=4, seed=1, max_new_tokens=4, batch_size=4)
    assert first == sample_user_turns(model, tok, n=4, seed=1, max_new_tokens=4, batch_size=4)
    assert len(first) <= 4  # a random model rarely closes its turn: the loop gives up instead of hanging
    pairs = self_replay_pairs(model, tok, n=4, seed=1, exclude=first, answer_tokens=4, batch_size=4)
    assert all(p.instruction not in first for p in pairs)
