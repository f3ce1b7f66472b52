"""LiftMemory in a LangChain agent: the agent adds a document to memory, then answers a question from it.

    python examples/agent_with_memory.py ["question"] [--document FILE] [--route auto|absorb|retrieve|context]

The agent needs a chat model that calls tools. Name one with LIFT_AGENT_MODEL (any ``init_chat_model`` spec, e.g.
``openai:gpt-4o-mini``, with its package and key). Without one it runs offline with a scripted stand-in that
makes the tool calls a tool-calling model would: small local models cannot emit tool calls. The answers always
come from the local model with lift-tool's memory (settings from LIFT_*; the default model is SmolLM2-135M).
"""

import argparse
import os

from langchain.agents import create_agent

from lift_tool.lift import shared_lift
from lift_tool.sample import sample_document_path
from lift_tool.scripted_model import ScriptedChatModel, reply_with_tool_result, tool_call
from lift_tool.tool import LiftToolkit

SYSTEM = ("You answer questions about documents. Add a document with lift_absorb, then answer with lift_memory and "
          "cite the sources it gives.")


def tool_calling_model(document: str, question: str, route: str):
    """The configured chat model, or a scripted one that absorbs the document, asks, and relays the answer."""
    if os.environ.get("LIFT_AGENT_MODEL"):
        from langchain.chat_models import init_chat_model

        return init_chat_model(os.environ["LIFT_AGENT_MODEL"])
    return ScriptedChatModel(script=[
        tool_call("lift_absorb", path=document, route=route),
        tool_call("lift_memory", question=question),
        reply_with_tool_result,
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default="Who was the most famous keeper of the Tamsin Light?")
    parser.add_argument("--document", default=str(sample_document_path()), help="default: the bundled sample")
    parser.add_argument("--route", default="auto", choices=("auto", "absorb", "retrieve", "context"))
    args = parser.parse_args()

    lift = shared_lift()  # one model and one memory for every tool
    tools = LiftToolkit(lift=lift).get_tools()
    agent = create_agent(model=tool_calling_model(args.document, args.question, args.route), tools=tools,
                         system_prompt=SYSTEM)
    request = f"Add the document {args.document} to your memory, then answer: {args.question}"
    result = agent.invoke({"messages": [("user", request)]})

    for message in result["messages"]:
        if message.type == "ai" and message.tool_calls:
            for call in message.tool_calls:
                print(f"agent calls {call['name']}({call['args']})")
        elif message.type == "tool":
            print(f"{message.name} ({message.status}): {message.text}\n")
    print(f"answer: {result['messages'][-1].text}")


if __name__ == "__main__":
    main()
