"""A long question-and-answer session that survives restarts: each run adds one turn to a session kept in a
SQLite file by LangGraph's checkpointer, and prints the history so far.

    python examples/long_session.py "Who built the Tamsin Light?"            # first turn
    python examples/long_session.py "And when was it automated?"             # a later run: same session
    python examples/long_session.py --history                                # just show the session

The document (default: the bundled sample) goes through the router once, on the first turn. When the
conversation outgrows its share of the model's window, its older part is absorbed into an adapter of its own.
"""

import argparse
from pathlib import Path

from lift_tool.graphs.doc_qa import build_graph
from lift_tool.graphs.router import graph as router
from lift_tool.sample import sample_document_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?")
    parser.add_argument("--db", default="lift-session.sqlite", help="the session file (default: ./lift-session.sqlite)")
    parser.add_argument("--thread", default="demo", help="the session's name within the file")
    parser.add_argument("--document", default=str(sample_document_path()))
    parser.add_argument("--history", action="store_true", help="print the session and stop")
    args = parser.parse_args()

    session = build_graph(db_path=Path(args.db))
    config = {"configurable": {"thread_id": args.thread}}
    state = session.get_state(config).values

    if args.question and not args.history:
        turn = {"messages": [("user", args.question)]}
        if not state.get("documents"):  # the first turn: store the document and pin the session to it
            routed = router.invoke({"source": args.document}, config)
            if routed.get("status") == "error":
                raise SystemExit(f"cannot use {args.document}: {routed['error']}")
            print(f"{routed['title']}: {routed['route']} ({routed['reason']})")
            turn["documents"] = [routed["doc_id"]]
        state = session.invoke(turn, config)

    messages = state.get("messages", [])
    print(f"session {args.thread!r} in {args.db}: {len(messages)} messages")
    for message in messages:
        speaker = "you" if message.type == "human" else "lift"
        print(f"  {speaker}: {message.text}")
    if state.get("conversation_documents"):
        print(f"  ({len(state['conversation_documents'])} earlier part(s) of the conversation absorbed into adapters)")


if __name__ == "__main__":
    main()
