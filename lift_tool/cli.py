"""The ``lift`` command line.

    lift absorb FILE [--title T] [--budget-seconds S]    absorb a document into an adapter (LIFT)
    lift ask [DOC] "question" [--mode MODE]              answer from memory (DOC: id, id prefix or title)
    lift list | forget DOC | verify [--repair]           look after the memory
    lift export DOC FILE | import FILE                   move one document's memory between machines
    lift chat [DOC ...]                                  ask questions in a loop
    lift eval --data FILE.jsonl ...                      compare methods on a question set
    lift demo                                            the guided demonstration on the bundled model

Errors a user can cause are printed as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lift_tool.answering import MODES
from lift_tool.errors import LiftError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lift", description="Parametric memory for long documents (LIFT).")
    parser.add_argument("--model", help="model spec: smollm2-135m (default), a local folder or a .gguf file")
    parser.add_argument("--home", help="memory directory (default: $LIFT_HOME or the user data directory)")
    parser.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    absorb = commands.add_parser("absorb", help="absorb a document into an adapter (LIFT)")
    absorb.add_argument("file", help="a text, Markdown, PDF or HTML file")
    absorb.add_argument("--title", help="the document's title (default: its first heading or the file name)")
    absorb.add_argument("--budget-seconds", type=float, help="stop training after this long and keep what was learnt")
    absorb.add_argument("--force", action="store_true", help="train again even if this text was absorbed before")
    absorb.add_argument("--backend", choices=("auto", "peft", "unsloth"), help="training backend (default: auto)")
    absorb.add_argument("--quiet", action="store_true", help="no progress bar")

    ask = commands.add_parser("ask", help="answer a question from memory")
    ask.add_argument("args", nargs="+", metavar="[DOC] QUESTION",
                     help="an optional document (id, id prefix or exact title), then the question")
    ask.add_argument("--mode", choices=MODES, default="auto", help="how to answer (default: auto)")
    ask.add_argument("--max-new-tokens", type=int, help="longest answer, in tokens")

    commands.add_parser("list", help="list the documents in memory")
    forget = commands.add_parser("forget", help="remove a document, its adapters and its index")
    forget.add_argument("doc")
    verify = commands.add_parser("verify", help="check the adapters, the index and the retrieval store")
    verify.add_argument("--repair", action="store_true",
                        help="rebuild the index from the adapter folders where they explain themselves; remove damaged "
                             "adapters and interrupted writes")
    verify.add_argument("--prune", action="store_true",
                        help="with --repair: also remove folders and texts that the index does not mention and that "
                             "cannot be rebuilt")
    export = commands.add_parser("export", help="write one document's memory to an archive")
    export.add_argument("doc")
    export.add_argument("file")
    import_ = commands.add_parser("import", help="add a document's memory from an archive")
    import_.add_argument("file")

    chat = commands.add_parser("chat", help="ask questions in a loop (empty line or Ctrl-D ends)")
    chat.add_argument("docs", nargs="*", help="documents to ask about (default: chosen per question)")
    chat.add_argument("--mode", choices=MODES, default="auto")

    evaluate = commands.add_parser("eval", help="compare answering methods on a question set")
    evaluate.add_argument("--data", required=True, help="a JSONL file (longdoc_qa format or LooGLE)")
    evaluate.add_argument("--methods", default="base,context,rag,lift,lift+rag")
    evaluate.add_argument("--out", default="eval-out", help="folder for results.json, report.md and plot.png")
    evaluate.add_argument("--limit-docs", type=int, help="only the first N documents")
    evaluate.add_argument("--limit-questions", type=int, help="only the first N questions of each document")
    evaluate.add_argument("--on-bad-line", choices=("stop", "skip"), default="stop")
    evaluate.add_argument("--quiet", action="store_true")

    demo = commands.add_parser("demo", help="absorb the bundled sample document and compare answers")
    demo.add_argument("--keep", action="store_true", help="keep the absorbed document in your memory")
    demo.add_argument("--budget-seconds", type=float, help="time budget for absorption")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except LiftError as err:
        print(f"lift: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nlift: interrupted", file=sys.stderr)
        return 130


# ------------------------------------------------------------------------------------------------ helpers


def _settings(args, **extra):
    from lift_tool.config import load_settings

    overrides = dict(extra)
    if args.model:
        overrides["model"] = args.model
    if args.home:
        overrides["home"] = Path(args.home)
    if args.device:
        overrides["device"] = args.device
    return load_settings(**overrides)


def _lift(args, **extra):
    from lift_tool.lift import Lift

    return Lift(_settings(args, **extra))


def _size(n_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1024 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return ""


# ----------------------------------------------------------------------------------------------- commands


def cmd_absorb(args) -> int:
    extra = {"backend": args.backend} if args.backend else {}
    lift = _lift(args, **extra)
    document = lift.read(Path(args.file), title=args.title)
    print(f"absorbing {document.title!r} ({len(document.text):,} characters) into {lift.settings.home}", file=sys.stderr)
    result = lift.absorb(document, budget_seconds=args.budget_seconds, progress=not args.quiet, force=args.force)
    manifest = result.adapter.manifest
    if result.cached:
        print(f"already absorbed (same text, model and settings): {result.document.short_id}  {result.document.title}")
        return 0
    budget_note = " (stopped at the time budget)" if manifest.stopped_by_budget else ""
    print(
        f"absorbed {result.document.short_id}  {result.document.title}\n"
        f"  {manifest.tokens:,} tokens, {manifest.steps} steps in {manifest.train_seconds:.1f} s{budget_note}, "
        f"{manifest.tokens_per_second:.0f} training tokens/s, final loss {manifest.losses['final']}\n"
        f"  ask it:  lift ask {result.document.short_id} \"your question\""
    )
    return 0


def cmd_ask(args) -> int:
    if len(args.args) > 2:
        raise LiftError('give at most a document and a question; quote the question: lift ask DOC "question"')
    doc, question = (args.args[0], args.args[1]) if len(args.args) == 2 else (None, args.args[0])
    lift = _lift(args)
    stream = sys.stdout.isatty()
    answer = lift.ask(question, [doc] if doc else None, mode=args.mode, max_new_tokens=args.max_new_tokens,
                      on_text=(lambda text: print(text, end="", flush=True)) if stream else None)
    if stream:
        print()
    else:
        print(answer.text)
    _print_sources(answer)
    return 0


def _print_sources(answer) -> None:
    if answer.mode == "none":
        return
    sources = answer.sources()
    titles = ", ".join(document["title"] for document in sources["documents"])
    line = f"[{answer.mode}; {titles}; {answer.seconds:.1f} s]"
    if sources["passages"]:
        cites = "; ".join(f"{p['title']} #{p['index']} (chars {p['start']}-{p['end']})" for p in sources["passages"])
        line += f"\n[sources: {cites}]"
    print(line, file=sys.stderr)


def cmd_list(args) -> int:
    lift = _lift(args)
    documents = lift.documents()
    if not documents:
        print(f"no documents in {lift.settings.home}: add one with `lift absorb FILE`")
        return 0
    print(f"{'id':<12} {'tokens':>8} {'route':<8} {'model':<24} {'size':>9} {'train s':>8}  {'created':<20} title")
    for doc in documents:
        models = ", ".join(doc.base_models) or "-"
        train = f"{doc.train_seconds:.1f}" if doc.adapters else "-"
        print(f"{doc.short_id:<12} {doc.tokens:>8,} {doc.route:<8} {models:<24} {_size(doc.size_bytes):>9} "
              f"{train:>8}  {doc.created[:19]:<20} {doc.title}")
    return 0


def cmd_forget(args) -> int:
    removed = _lift(args).forget(args.doc)
    print(f"forgot {removed.short_id}  {removed.title}")
    return 0


def cmd_verify(args) -> int:
    if args.prune and not args.repair:
        raise LiftError("--prune goes with --repair: `lift verify --repair --prune`")
    report = _lift(args).verify(repair=args.repair, prune=args.prune)
    problems = report.problems()
    for problem in problems:
        print(f"problem: {problem}")
    for repaired in report.repaired:
        print(f"repaired: {repaired}")
    for left in report.left:
        print(f"left: {left}")
    if not problems:
        print("memory is intact")
        return 0
    if not args.repair:
        print("run `lift verify --repair` to rebuild what can be rebuilt and remove what is damaged")
        return 1
    if report.left:
        print("run `lift verify --repair --prune` to remove what could not be rebuilt")
        return 1
    return 0


def cmd_export(args) -> int:
    path = _lift(args).export(args.doc, args.file)
    print(f"wrote {path}")
    return 0


def cmd_import(args) -> int:
    entry = _lift(args).import_archive(args.file)
    print(f"imported {entry.short_id}  {entry.title}")
    return 0


def cmd_chat(args) -> int:
    lift = _lift(args)
    documents = [lift.resolve(ref).doc_id for ref in args.docs] or None
    print("ask a question (empty line to end)", file=sys.stderr)
    while True:
        try:
            question = input("? ").strip()
        except EOFError:
            break
        if not question:
            break
        answer = lift.ask(question, documents, mode=args.mode, on_text=lambda t: print(t, end="", flush=True))
        print()
        _print_sources(answer)
    return 0


def cmd_eval(args) -> int:
    from lift_tool.eval import run_evaluation

    settings = _settings(args)
    run_evaluation(settings, Path(args.data), [m.strip() for m in args.methods.split(",") if m.strip()],
                   Path(args.out), limit_docs=args.limit_docs, limit_questions=args.limit_questions,
                   on_bad_line=args.on_bad_line, progress=not args.quiet)
    return 0


def cmd_demo(args) -> int:
    from lift_tool.demo import run_demo

    return run_demo(_settings(args), keep=args.keep, budget_seconds=args.budget_seconds)


COMMANDS = {
    "absorb": cmd_absorb,
    "ask": cmd_ask,
    "list": cmd_list,
    "forget": cmd_forget,
    "verify": cmd_verify,
    "export": cmd_export,
    "import": cmd_import,
    "chat": cmd_chat,
    "eval": cmd_eval,
    "demo": cmd_demo,
}

if __name__ == "__main__":
    sys.exit(main())
