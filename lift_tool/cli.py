"""The ``lift`` command line.

    lift absorb FILE [--title T] [--budget-seconds S]    absorb a document into an adapter (LIFT)
    lift ask [DOC ...] "question" [--mode MODE]          answer from memory (DOC: id, id prefix or title)
    lift list | show DOC | forget DOC | verify [--repair]   look after the memory
    lift export DOC FILE | export DOC --peft DIR | import FILE   move a document's memory, or its adapter
    lift chat [DOC ...]                                  ask questions in a loop
    lift eval --data FILE.jsonl ...                      compare methods on a question set
    lift demo                                            the guided demonstration on the bundled model

The global options (--model, --home, --device, --verbose) may come before or after the command; list, show,
ask, absorb and verify take --json. Errors a user can cause are printed as one line, without a traceback: exit
status 1 for a problem found while running, 2 for a command line that is not right. Third-party progress bars
and warnings are shown only with --verbose.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from lift_tool import __version__
from lift_tool.answering import MODES
from lift_tool.errors import InputError, LiftError, UnknownDocumentError


def _global_options(parser: argparse.ArgumentParser, after_command: bool) -> None:
    """--model, --home, --device and --verbose, accepted before the command and after it (where a value given
    after the command wins, and one not given there leaves the one before in place)."""
    unset = {"default": argparse.SUPPRESS} if after_command else {}
    parser.add_argument("--model", help="model spec: smollm2-135m (default), a local folder or a .gguf file", **unset)
    parser.add_argument("--home", help="memory directory (default: $LIFT_HOME or the user data directory)", **unset)
    parser.add_argument("--device", help="auto (default), cpu, cuda or cuda:N", **unset)
    parser.add_argument("--verbose", action="store_true", help="show third-party progress bars and warnings", **unset)


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON, for scripts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lift", description="Parametric memory for long documents (LIFT).")
    parser.add_argument("--version", action="version", version=f"lift-tool {__version__}")
    _global_options(parser, after_command=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, after_command=True)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    class Commands:  # every command takes the global options too
        @staticmethod
        def add_parser(name: str, **kwargs) -> argparse.ArgumentParser:
            command = subparsers.add_parser(name, parents=[common], **kwargs)
            command.set_defaults(usage_error=command.error)
            return command

    commands = Commands()

    absorb = commands.add_parser("absorb", help="absorb a document into an adapter (LIFT)")
    absorb.add_argument("files", nargs="+", metavar="FILE",
                        help="a text, Markdown, PDF or HTML file; several, or a folder of them, are absorbed together "
                             "(in parallel on a Ray cluster where LIFT_CLUSTER__ADDRESS names one)")
    absorb.add_argument("--title", help="the document's title (default: its first heading or the file name)")
    absorb.add_argument("--budget-seconds", type=float, help="stop training after this long and keep what was learnt")
    absorb.add_argument("--force", action="store_true", help="train again even if this text was absorbed before")
    absorb.add_argument("--backend", choices=("auto", "peft", "unsloth"), help="training backend (default: auto)")
    absorb.add_argument("--quiet", action="store_true", help="no progress bar")
    _json_option(absorb)

    ask = commands.add_parser("ask", help="answer a question from memory")
    ask.add_argument("args", nargs="+", metavar="[DOC ...] QUESTION",
                     help="the documents to ask (ids, id prefixes or exact titles; default: chosen by the question), "
                          "then the question, quoted")
    ask.add_argument("--mode", choices=MODES, default="auto", help="how to answer (default: auto)")
    ask.add_argument("--max-new-tokens", type=int, help="longest answer, in tokens")
    _json_option(ask)

    _json_option(commands.add_parser("list", help="list the documents in memory"))
    show = commands.add_parser("show", help="a document's record, its adapters (manifest, coverage) and retrieval chunks")
    show.add_argument("doc")
    _json_option(show)
    forget = commands.add_parser("forget", help="remove a document, its adapters and its index")
    forget.add_argument("doc")
    verify = commands.add_parser("verify", help="check the adapters, the index and the retrieval store")
    verify.add_argument("--repair", action="store_true",
                        help="rebuild the index from the adapter folders where they explain themselves; remove damaged "
                             "adapters and interrupted writes")
    verify.add_argument("--prune", action="store_true",
                        help="with --repair: also remove folders and texts that the index does not mention and that "
                             "cannot be rebuilt")
    _json_option(verify)
    export = commands.add_parser("export", help="write one document's memory to an archive, or its adapter as a "
                                                "plain PEFT folder (--peft)")
    export.add_argument("doc")
    export.add_argument("file", nargs="?", help="the archive to write (.tar.gz)")
    export.add_argument("--peft", metavar="DIR", help="write the adapter as a PEFT folder that loads without lift-tool")
    export.add_argument("--force", action="store_true", help="overwrite an existing file or folder")
    import_ = commands.add_parser("import", help="add a document's memory from an archive")
    import_.add_argument("file")

    chat = commands.add_parser("chat", help="ask questions in a loop (empty line or Ctrl-D ends)")
    chat.add_argument("docs", nargs="*", help="documents to ask about (default: chosen per question)")
    chat.add_argument("--mode", choices=MODES, default="auto")

    evaluate = commands.add_parser("eval", help="compare answering methods on a question set")
    evaluate.add_argument("--data", required=True, help="a JSONL file (longdoc_qa format or LooGLE)")
    evaluate.add_argument("--methods", default="base,context,rag,lift,lift+rag")
    evaluate.add_argument("--out", default="eval-out", help="folder for results.json, report.md and plot.png")
    evaluate.add_argument("--memory", help="the memory to absorb into and answer from (default OUT/memory); another "
                          "evaluation's memory lends its adapters of the same documents")
    evaluate.add_argument("--limit-docs", type=int, help="only the first N documents")
    evaluate.add_argument("--limit-questions", type=int, help="only the first N questions of each document")
    evaluate.add_argument("--on-bad-line", choices=("stop", "skip"), default="stop")
    evaluate.add_argument("--quiet", action="store_true")

    serve = commands.add_parser("serve", help="start a vLLM server on the base model, ready for the memory's "
                                               "adapters (answer there with LIFT_SERVER__URL)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument("--dry-run", action="store_true", help="print the command instead of running it")

    demo = commands.add_parser("demo", help="absorb the bundled sample document and compare answers")
    demo.add_argument("--keep", action="store_true", help="keep the absorbed document in your memory")
    demo.add_argument("--budget-seconds", type=float, help="time budget for absorption")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        _quiet_third_parties()
    try:
        return COMMANDS[args.command](args)
    except LiftError as err:
        print(f"lift: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nlift: interrupted", file=sys.stderr)
        return 130


# ------------------------------------------------------------------------------------------------ helpers


def _quiet_third_parties() -> None:
    """No progress bars or warnings from the libraries below (transformers' "Loading weights", FutureWarnings):
    set before they are imported. lift-tool's own progress (absorbing) stays."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)


def _print_json(value) -> None:
    print(json.dumps(value, indent=1, ensure_ascii=False, default=str))


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


def _document_files(names: list[str]) -> list[Path]:
    """The files named, with each folder replaced by the document files in it (sorted)."""
    from lift_tool.documents import DOCUMENT_SUFFIXES

    files: list[Path] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES)
            if not found:
                raise InputError(f"{path} holds no document files ({', '.join(sorted(DOCUMENT_SUFFIXES))})")
            files += found
        else:
            files.append(path)
    return files


def cmd_absorb_many(args, lift, files: list[Path]) -> int:
    from tqdm.auto import tqdm

    where = f"on the Ray cluster at {lift.settings.cluster.address}" if lift.cluster else "one after the other"
    print(f"absorbing {len(files)} documents into {lift.settings.home}, {where}", file=sys.stderr)
    rows = []
    with tqdm(total=len(files), desc="documents", unit="doc", disable=args.quiet or args.json) as bar:
        def done(source, result) -> None:
            ok = not isinstance(result, LiftError)
            rows.append({"file": str(source), "absorbed": ok,
                         **({"doc_id": result.document.doc_id, "title": result.document.title,
                             "cached": result.cached, "seconds": round(result.seconds, 2)} if ok
                            else {"error": str(result)})})
            bar.update(1)

        lift.absorb_many(files, budget_seconds=args.budget_seconds, on_done=done)
    failed = [row for row in rows if not row["absorbed"]]
    if args.json:
        _print_json(rows)
    else:
        for row in rows:
            print(f"absorbed {row['doc_id'][:12]}  {row['title']}" if row["absorbed"]
                  else f"failed   {row['file']}: {row['error']} (kept for retrieval where it could be read)")
    return 1 if failed else 0


def cmd_absorb(args) -> int:
    extra = {"backend": args.backend} if args.backend else {}
    lift = _lift(args, **extra)
    files = _document_files(args.files)
    if len(files) > 1:
        if args.title or args.force:
            args.usage_error("--title and --force go with one document")
        return cmd_absorb_many(args, lift, files)
    document = lift.read(files[0], title=args.title)
    print(f"absorbing {document.title!r} ({len(document.text):,} characters) into {lift.settings.home}", file=sys.stderr)
    result = lift.absorb(document, budget_seconds=args.budget_seconds, progress=not (args.quiet or args.json),
                         force=args.force)
    manifest = result.adapter.manifest
    if args.json:
        _print_json({"doc_id": result.document.doc_id, "title": result.document.title, "cached": result.cached,
                     "tokens": manifest.tokens, "steps": manifest.steps, "train_seconds": manifest.train_seconds,
                     "stopped_by_budget": manifest.stopped_by_budget, "final_loss": manifest.losses.get("final"),
                     "adapter": str(result.adapter.path), "seconds": round(result.seconds, 2)})
        return 0
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
    *docs, question = args.args
    lift = _lift(args)
    if args.mode != "base" and not lift.documents():  # before the model loads: there is nothing to answer from
        raise LiftError(f"there is nothing in memory ({lift.settings.home}): add a document with `lift absorb FILE` "
                        "first, or ask the model without memory with --mode base")
    try:
        documents = [lift.resolve(ref).doc_id for ref in docs] or None
    except UnknownDocumentError as err:
        if len(docs) > 1:  # an unquoted question reads as documents
            raise UnknownDocumentError(f'{err} (is the question in several words? quote it: lift ask DOC "question")') from None
        raise
    stream = sys.stdout.isatty() and not args.json
    answer = lift.ask(question, documents, mode=args.mode, max_new_tokens=args.max_new_tokens,
                      on_text=(lambda text: print(text, end="", flush=True)) if stream else None)
    if args.json:
        _print_json({"question": question, "answer": answer.text if answer.mode != "none" else None,
                     "mode": answer.mode, "seconds": round(answer.seconds, 2), **answer.sources(),
                     "usage": {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens}})
        return 0
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


def _covered(doc) -> str:
    """The share of the document its adapter was trained on (less than 100% where the time budget cut it)."""
    if not doc.adapters:
        return "-"
    return "?" if doc.coverage is None else f"{doc.coverage:.0%}"


def _document_json(doc) -> dict:
    return {"doc_id": doc.doc_id, "title": doc.title, "tokens": doc.tokens, "route": doc.route, "created": doc.created,
            "base_models": doc.base_models, "size_bytes": doc.size_bytes, "train_seconds": doc.train_seconds,
            "coverage": doc.coverage}


def cmd_list(args) -> int:
    lift = _lift(args)
    documents = lift.documents()
    if args.json:
        _print_json([_document_json(doc) for doc in documents])
        return 0
    if not documents:
        print(f"no documents in {lift.settings.home}: add one with `lift absorb FILE`")
        return 0
    print(f"{'id':<12} {'tokens':>8} {'route':<8} {'model':<24} {'size':>9} {'train s':>8} {'covered':>7}  "
          f"{'created':<20} title")
    for doc in documents:
        models = ", ".join(doc.base_models) or "-"
        train = f"{doc.train_seconds:.1f}" if doc.adapters else "-"
        print(f"{doc.short_id:<12} {doc.tokens:>8,} {doc.route:<8} {models:<24} {_size(doc.size_bytes):>9} "
              f"{train:>8} {_covered(doc):>7}  {doc.created[:19]:<20} {doc.title}")
    return 0


def cmd_forget(args) -> int:
    removed = _lift(args).forget(args.doc)
    print(f"forgot {removed.short_id}  {removed.title}")
    return 0


def cmd_show(args) -> int:
    lift = _lift(args)
    doc = lift.resolve(args.doc)
    adapters = [{**adapter.manifest.to_json(), "key": adapter.key, "path": str(adapter.path),
                 "size_bytes": adapter.size_bytes, "coverage": _coverage(adapter.manifest)} for adapter in doc.adapters]
    chunks = [{"index": c.index, "start": c.start, "end": c.end, "text": c.text} for c in lift.store.chunks(doc.doc_id)]
    if args.json:
        _print_json({"document": _document_json(doc), "adapters": adapters, "chunks": chunks})
        return 0
    print(f"{doc.title}\n  id       {doc.doc_id}\n  tokens   {doc.tokens:,}\n  route    {doc.route}\n"
          f"  created  {doc.created}")
    if not adapters:
        print("  no adapter: questions are answered from retrieval or with the document in context")
    for adapter in adapters:
        coverage = "unknown" if adapter["coverage"] is None else f"{adapter['coverage']:.0%} of the document"
        budget = " (stopped at the time budget)" if adapter["stopped_by_budget"] else ""
        if adapter["resumed_at_step"]:
            budget += f" (interrupted, resumed at step {adapter['resumed_at_step']})"
        print(f"adapter {adapter['key']}\n  base model  {adapter['base_model']} ({adapter['base_fingerprint']})\n"
              f"  coverage    {coverage}\n"
              f"  training    {adapter['steps']} of {adapter['planned_steps']} steps{budget}, "
              f"{adapter['train_seconds']:.1f} s, {adapter['backend'] or '-'} on {adapter['device'] or '-'} "
              f"({adapter['precision'] or '-'}), final loss {adapter['losses'].get('final')}\n"
              f"  questions   {adapter['qa_pairs']} synthetic, {adapter['unanswerable_pairs']} unanswerable\n"
              f"  settings    {adapter['settings_fingerprint']}\n  created     {adapter['created']}\n"
              f"  folder      {adapter['path']}")
    print(f"{len(chunks)} retrieval chunk(s):")
    for chunk in chunks:
        text = " ".join(chunk["text"].split())
        print(f"  #{chunk['index']} chars {chunk['start']}-{chunk['end']}: {text[:100]}{'…' if len(text) > 100 else ''}")
    return 0


def _coverage(manifest) -> float | None:
    """The share of the document the adapter was trained on, where its manifest records it."""
    for name in ("coverage", "covered", "covered_share"):
        value = getattr(manifest, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def cmd_verify(args) -> int:
    if args.prune and not args.repair:
        args.usage_error("--prune goes with --repair: `lift verify --repair --prune`")
    report = _lift(args).verify(repair=args.repair, prune=args.prune)
    problems = report.problems()
    if args.json:
        _print_json({"intact": not problems, "problems": problems, "repaired": report.repaired, "left": report.left})
        return 0 if not problems or (args.repair and not report.left) else 1
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
    if (args.file is None) == (args.peft is None):
        args.usage_error("give an archive to write (lift export DOC FILE) or a folder (lift export DOC --peft DIR)")
    if args.peft is not None:
        folder = _lift(args).export_peft(args.doc, args.peft, force=args.force)
        print(f"wrote {folder} (a PEFT adapter folder: PeftModel.from_pretrained(base_model, {str(folder)!r}))")
        return 0
    if Path(args.file).exists() and not args.force:
        raise LiftError(f"{args.file} exists: give another name, or --force to overwrite it")
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
                   on_bad_line=args.on_bad_line, progress=not args.quiet,
                   memory=Path(args.memory) if args.memory else None)
    return 0


def cmd_serve(args) -> int:
    import os

    from lift_tool.memory.registry import Registry
    from lift_tool.models import pick_device, pick_dtype, resolve_spec
    from lift_tool.portable import hub_name
    from lift_tool.served import serve_command

    settings = _settings(args)
    _, folder = resolve_spec(settings.model, settings)
    dtype = str(pick_dtype(pick_device(settings.device), settings.dtype)).removeprefix("torch.")
    command, env = serve_command(settings, Registry(settings.home), Path(folder),
                                 hub_name(settings.model, Path(folder)), dtype, args.host, args.port)
    if args.dry_run:
        print(" ".join(f"{key}={value}" for key, value in env.items()), " ".join(command))
        return 0
    print(f"starting vLLM on {hub_name(settings.model, Path(folder))} at http://{args.host}:{args.port}; answer there "
          f"with LIFT_SERVER__URL=http://{args.host}:{args.port}", file=sys.stderr)
    os.execve(command[0], command, {**os.environ, **env})


def cmd_demo(args) -> int:
    from lift_tool.demo import run_demo

    return run_demo(_settings(args), keep=args.keep, budget_seconds=args.budget_seconds)


COMMANDS = {
    "absorb": cmd_absorb,
    "ask": cmd_ask,
    "list": cmd_list,
    "show": cmd_show,
    "forget": cmd_forget,
    "verify": cmd_verify,
    "export": cmd_export,
    "import": cmd_import,
    "chat": cmd_chat,
    "eval": cmd_eval,
    "serve": cmd_serve,
    "demo": cmd_demo,
}

if __name__ == "__main__":
    sys.exit(main())
