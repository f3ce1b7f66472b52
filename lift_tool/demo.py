"""``lift demo``: absorb the bundled sample document, then answer its questions three ways.

The sample (``data/harrowmere.md``) is about 2,000 tokens of invented facts, so no model can know them in
advance; its questions (``data/harrowmere_questions.json``) were written by hand and are never trained on. Each
question is answered with no memory, with the adapter (the document not in the prompt), and with the document
in the prompt, and marked right when the answer contains an accepted answer.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from lift_tool.config import Settings
from lift_tool.sample import sample_document_path, sample_questions

DEMO_MODES = (("base", "no memory"), ("lift", "adapter (LIFT)"), ("context", "document in prompt"))


def is_right(prediction: str, answers: list[str]) -> bool:
    """Whether an answer contains one of the accepted answers (case aside)."""
    lowered = prediction.lower()
    return any(answer.lower() in lowered for answer in answers)


def run_demo(settings: Settings, keep: bool = False, budget_seconds: float | None = None, out=sys.stdout) -> int:
    from lift_tool.lift import Lift

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    with tempfile.TemporaryDirectory(prefix="lift-demo-") as scratch:
        if not keep:  # a scratch memory, so the demo leaves the user's memory untouched
            settings = settings.model_copy(update={"home": Path(scratch)})
        lift = Lift(settings)
        say("lift-tool demo: absorb a document into a LoRA adapter, then answer without it in the prompt.\n")

        started = time.monotonic()
        loaded = lift.loaded
        say(f"model    {loaded.name} on {loaded.device} (loaded in {time.monotonic() - started:.1f} s)")
        document = lift.read(sample_document_path())
        result = lift.absorb(document, budget_seconds=budget_seconds, progress=True)
        manifest = result.adapter.manifest
        say(f"document {document.title!r}: {manifest.tokens:,} tokens")
        say(f"absorbed in {result.seconds:.1f} s ({manifest.steps} steps, {manifest.tokens_per_second:.0f} "
            f"training tokens/s, {manifest.qa_pairs} generated questions)\n")

        questions = sample_questions()
        right = {mode: 0 for mode, _ in DEMO_MODES}
        seconds = {mode: 0.0 for mode, _ in DEMO_MODES}
        for number, item in enumerate(questions, 1):
            say(f"Q{number}. {item['question']}   (expected: {item['answers'][0]})")
            for mode, label in DEMO_MODES:
                answer = lift.ask(item["question"], [document.doc_id], mode=mode, max_new_tokens=32)
                ok = is_right(answer.text, item["answers"])
                right[mode] += ok
                seconds[mode] += answer.seconds
                shown = answer.text.replace("\n", " ")
                shown = shown if len(shown) <= 70 else shown[:67] + "..."
                say(f"    {'right' if ok else 'wrong':<5}  {label:<19} {answer.seconds:5.1f} s  {shown}")
            say()

        n = len(questions)
        say("summary")
        for mode, label in DEMO_MODES:
            say(f"    {label:<19} {right[mode]}/{n} right ({100 * right[mode] / n:.0f}%), "
                f"{seconds[mode] / n:.2f} s per question")
        say(f"\nabsorption took {result.seconds:.1f} s once; the adapter answers with a prompt "
            f"{manifest.tokens:,} tokens shorter than the in-context answer.")
        if keep:
            say(f"the document stays in {settings.home}: try  lift ask {result.document.short_id} \"...\"")
    return 0
