"""The research assistant over a folder: every document goes through the router (in context, absorbed or
retrieval only), the question is broken into sub-questions, each is answered from memory with citations, and a
short report is written.

    python examples/research_assistant.py ["question"] [--folder DIR] [--chat-model provider:model]

Offline it runs on the local default model (modest prose; the point is the whole flow). ``--chat-model`` names
any ``init_chat_model`` spec to plan and write the report instead; answers still come from lift-tool's memory.
"""

import argparse
from pathlib import Path

from lift_tool.graphs.research_assistant import graph

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?",
                        default="How does Vessmoor earn its living, and where does its electricity come from?")
    parser.add_argument("--folder", default=str(HERE / "documents"), help="default: examples/documents")
    parser.add_argument("--chat-model", help="a LangChain chat model to plan and write, e.g. openai:gpt-4o-mini")
    parser.add_argument("--budget-seconds", type=float, default=600, help="longest acceptable absorption per document")
    parser.add_argument("--max-sub-questions", type=int, default=2)
    args = parser.parse_args()

    configurable = {"budget_seconds": args.budget_seconds, "max_sub_questions": args.max_sub_questions}
    if args.chat_model:
        configurable["chat_model"] = args.chat_model
    result = graph.invoke({"question": args.question, "folder": args.folder}, {"configurable": configurable})

    for document in result.get("documents", []):
        how = document["reason"] or document["error"]  # a document that could not be read has no route
        print(f"{Path(document['path']).name}: {document['route'] or 'not stored'} ({document['status']}): {how}")
    print()
    print(result["report"])


if __name__ == "__main__":
    main()
