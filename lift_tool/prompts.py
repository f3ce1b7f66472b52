"""The prompts, in one place: training examples and answering must use exactly the same wording, or the adapter
learns a format the answering code never shows it."""

from __future__ import annotations

NOT_IN_DOCUMENT = "The document does not say."
QUESTION_MARKER = "\n\nQuestion:"  # separates the context from the question in a prompt with context


def system_prompt(titles: list[str]) -> str:
    if not titles:
        return "Answer the question briefly."
    names = "; ".join(f'"{title}"' for title in titles)
    return f"Answer questions about the document {names} briefly."


def user_prompt(question: str, context: str | None = None) -> str:
    """A closed-book question, or one with context (retrieved chunks or the document) before it."""
    if not context:
        return question
    return f"Context:\n{context}{QUESTION_MARKER} {question}"


def messages(question: str, titles: list[str], context: str | None = None) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system_prompt(titles)},
        {"role": "user", "content": user_prompt(question, context)},
    ]


def is_abstention(answer: str) -> bool:
    """Whether an answer says the document does not tell (evaluation of unanswerable questions; lift+rag)."""
    lowered = answer.lower()
    return any(phrase in lowered for phrase in ("does not say", "doesn't say", "not mentioned", "does not mention"))


def render(tokenizer, conversation: list[dict[str, str]], add_generation_prompt: bool) -> str:
    """The conversation as the model's chat template writes it, or a plain fallback for models without one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=add_generation_prompt)
    parts = []
    for message in conversation:
        label = {"system": "", "user": "Question: ", "assistant": "Answer: "}[message["role"]]
        parts.append(f"{label}{message['content']}\n")
    if add_generation_prompt:
        parts.append("Answer:")
    return "".join(parts)
