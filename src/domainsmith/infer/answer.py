"""One question, one greedy answer, in any mode: closed book, RAG with citations, or few-shot (ICL).

Behind `domainsmith ask`; `eval` builds the same prompts in batches (evaluate/modes.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import DomainsmithError
from ..infer.rag_prompt import CITATION, build_rag_prompt, check_citations, is_abstention


def strip_invalid_citations(answer: str, invalid: list[int]) -> str:
    """Remove [n] markers that name no source, so every [n] left in the answer exists."""
    if not invalid:
        return answer
    bad = set(invalid)
    cleaned = CITATION.sub(lambda m: "" if int(m.group(1)) in bad else m.group(0), answer)
    return " ".join(cleaned.split())


def answer_question(
    question: str,
    model: str,
    adapter: Path | None = None,
    *,
    mode: str = "closed",
    kb_dir: Path | None = None,
    examples: Path | None = None,
    k: int = 5,
    budget_tokens: int = 1024,
    system: str | None = None,
    max_new_tokens: int = 256,
    on_convert: Callable[[str], None] | None = None,
) -> dict:
    """{"answer", "mode", ...}; rag adds "citations" (each cited source) and "sources" (all given to the model);
    icl adds "examples" (the solved examples used, most similar first)."""
    from .generation import generate_batch

    if mode == "rag" and kb_dir is None:
        raise DomainsmithError("--mode rag needs --kb DIR (build one with: domainsmith kb build PATH --kb DIR)")
    if mode == "icl" and examples is None:
        raise DomainsmithError("--mode icl needs --examples FILE (an instruction file of solved examples)")
    # Open the KB / example pool before loading the generator: a wrong path fails fast.
    retriever = pool = None
    if mode == "rag":
        from ..kb import open_kb

        retriever = open_kb(kb_dir)
    elif mode == "icl":
        from ..kb.embedding import embedder_for
        from .few_shot import ExamplePool

        pool = ExamplePool.from_file(Path(examples), embedder_for(None))

    from ..model_loading import load_for_inference

    tokenizer, lm = load_for_inference(model, adapter, on_convert=on_convert)
    result: dict = {"question": question, "mode": mode, "model": model, "adapter": str(adapter) if adapter else None}
    if mode == "rag":
        hits = retriever.search(question, k=k)
        prompt = build_rag_prompt(question, hits, tokenizer, budget_tokens, system)
        raw = generate_batch(lm, tokenizer, [prompt.messages], max_new_tokens, 1)[0]
        check = check_citations(raw, prompt.sources)
        result.update(
            answer=strip_invalid_citations(raw, check.invalid),
            citations=[s.as_dict() for s in check.cited],
            invalid_citations=check.invalid,
            abstained=is_abstention(raw),
            sources=[s.as_dict() for s in prompt.sources],
        )
        return result
    if mode == "icl":
        from .few_shot import build_few_shot_prompt

        prompt = build_few_shot_prompt(question, pool, tokenizer, k, budget_tokens, system)
        messages = prompt.messages
        result["examples"] = [{"question": e.question, "answer": e.answer, "similarity": s} for e, s in prompt.examples]
    else:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    result["answer"] = generate_batch(lm, tokenizer, [messages], max_new_tokens, 1)[0]
    return result
