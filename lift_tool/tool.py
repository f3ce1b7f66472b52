"""LangChain tools over a lift-tool memory.

``LiftMemory`` answers a question from the stored documents: it chooses the document(s) (or takes the ones named),
swaps in their adapters, answers with the local model, and cites the documents and the retrieved chunks.
``LiftToolkit`` adds the companion tools: absorb a document (text or a path), list documents, forget one.

    from langchain.agents import create_agent
    from lift_tool.tool import LiftToolkit

    agent = create_agent(model=any_tool_calling_chat_model, tools=LiftToolkit().get_tools())

Every tool answers a mistake with a message the agent can read and act on (a missing or mistyped argument, an
unknown document, nothing absorbed yet): the ToolMessage carries it with status "error"; nothing raises out of
the tool and ends the agent's run. The tools are synchronous and asynchronous (``ainvoke`` runs the work in a
thread: the model serves one generation or training at a time anyway).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.tools import BaseTool, BaseToolkit, ToolException
from pydantic import BaseModel, Field

from lift_tool.answering import Mode
from lift_tool.errors import LiftError
from lift_tool.routing import DEFAULT_BUDGET_SECONDS

if TYPE_CHECKING:
    from lift_tool.answering import Answer
    from lift_tool.lift import Lift

_log = logging.getLogger("lift_tool.tool")

MODE_HELP = ("auto (default: the adapter where there is one, else the document or retrieved passages), lift "
             "(adapter only), rag (retrieved passages), lift+rag, context (the document in the prompt, cut to the "
             "window), lift+context (the adapter and the document cut to the window), base (no memory)")


# -------------------------------------------------------------------------------------------- common parts


def explain_bad_arguments(tool_name: str, usage: str, error: Exception) -> str:
    """A readable account of a pydantic validation error, with how to call the tool correctly."""
    problems = []
    for item in getattr(error, "errors", lambda: [])():
        where = ".".join(str(part) for part in item.get("loc", ())) or "the arguments"
        if item.get("type") == "missing":
            problems.append(f"`{where}` is missing")
        else:
            problems.append(f"`{where}`: {item.get('msg', 'invalid')} (got {item.get('input')!r})")
    found = "; ".join(problems) or str(error)
    return f"Error: {tool_name} was called with bad arguments: {found}. Call it again with {usage}."


class _LiftTool(BaseTool):
    """Shared by the lift tools: the memory they use, and errors turned into messages for the agent."""

    lift: Any = Field(default=None, exclude=True)  # a Lift; None: the shared one for the environment's settings
    usage: str = Field(default="", exclude=True)  # how to call it, for error messages
    handle_tool_error: bool = True

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        if self.handle_validation_error is False:
            self.handle_validation_error = lambda error: explain_bad_arguments(self.name, self.usage, error)

    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        return super().invoke(self._arguments_as_object(input), config, **kwargs)

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        return await super().ainvoke(self._arguments_as_object(input), config, **kwargs)

    def _arguments_as_object(self, input: Any) -> Any:
        """A tool call whose ``args`` is not an object (a model may send a bare string, or null) reaches the
        tool's own argument check, which answers with how to call it: a string as the one required argument,
        anything else as no arguments."""
        if not (isinstance(input, dict) and input.get("type") == "tool_call") or isinstance(input.get("args"), dict):
            return input
        args = input.get("args")
        required = [name for name, field in self.args_schema.model_fields.items() if field.is_required()]
        fixed = {required[0]: args} if isinstance(args, str) and len(required) == 1 else {}
        return {**input, "args": fixed}

    def memory(self) -> "Lift":
        if self.lift is None:
            from lift_tool.lift import shared_lift

            self.lift = shared_lift()
        return self.lift

    def _run(self, *args: Any, run_manager: Any = None, **kwargs: Any) -> Any:
        try:
            return self._act(*args, **kwargs)
        except ToolException:
            raise
        except LiftError as err:  # a mistake the agent can fix: tell it what to do
            raise ToolException(f"Error: {err}") from err
        except Exception as err:  # anything else (out of memory, a file it may not read): report it, keep the run
            _log.exception("%s failed", self.name)
            raise ToolException(f"Error: {self.name} failed ({type(err).__name__}: {err})") from err

    async def _arun(self, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self._run, *args, **kwargs)

    def _act(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - each tool defines it
        raise NotImplementedError


def _doc_label(doc_id: str, title: str) -> str:
    return f'"{title}" [{doc_id[:12]}]'


# ---------------------------------------------------------------------------------------------- LiftMemory


class AskInput(BaseModel):
    question: str = Field(description="The question to answer from the stored documents, as a full sentence.")
    documents: list[str] | str | None = Field(
        default=None,
        description="Which documents to ask (ids, id prefixes or exact titles, as lift_list shows them). "
                    "Leave it out to let the memory choose by the question.",
    )
    mode: Mode = Field(default="auto", description=MODE_HELP)


class LiftMemory(_LiftTool):
    """Answer a question from documents absorbed into the memory, citing them."""

    name: str = "lift_memory"
    description: str = (
        "Answer a question from long documents stored in memory (absorbed into the model's parameters or indexed "
        "for retrieval). Returns the answer and the documents and passages it came from. Use it for any question "
        "about stored documents; see lift_list for what is stored."
    )
    args_schema: type[BaseModel] = AskInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    usage: str = '{"question": "<the question>"} and optionally "documents": ["<id or title>"], "mode": "auto"'
    max_new_tokens: int | None = None

    def _act(self, question: str, documents: list[str] | str | None = None, mode: str = "auto") -> tuple[str, dict]:
        from lift_tool.answering import NOTHING_MATCHES

        lift = self.memory()
        stored = lift.documents()
        if not stored:
            return ("Nothing has been absorbed yet, so there is no memory to answer from: add a document with "
                    "lift_absorb first.", {"answer": None, "mode": "none", "documents": [], "chunks": []})
        answer = lift.ask(question, documents or None, mode=mode, max_new_tokens=self.max_new_tokens)
        if answer.mode == "none":
            listed = ", ".join(_doc_label(doc.doc_id, doc.title) for doc in stored[:10])
            text = (f"{NOTHING_MATCHES} Stored documents: {listed}. To ask one of them anyway, name it in "
                    "`documents`; or add the right document with lift_absorb.")
            return text, _artifact(answer)
        return f"{answer.text}\n\n{self._sources(answer)}", _artifact(answer)

    def _sources(self, answer: "Answer") -> str:
        how = {
            "lift": "from its adapter",
            "rag": "from retrieved passages",
            "lift+rag": "from its adapter and retrieved passages",
            "context": "with the document in the prompt",
            "lift+context": "from its adapter, with the document in the prompt",
            "base": "without memory",
        }.get(answer.mode, answer.mode)
        parts = []
        for source in answer.sources()["documents"]:
            cited = _doc_label(source["doc_id"], source["title"])
            if source["passages"]:
                cited += " passages " + ", ".join(f"#{index}" for index in source["passages"])
            status = self.memory().absorption_status(source["doc_id"])
            if status.state == "running":
                cited += " (still being absorbed: answered without its adapter for now)"
            parts.append(cited)
        return f"Sources ({how}): " + ("; ".join(parts) if parts else "none")


def _artifact(answer: "Answer") -> dict:
    """The answer as data, for code that reads the ToolMessage's artifact."""
    sources = answer.sources()
    return {
        "answer": answer.text,
        "mode": answer.mode,
        "documents": [{"doc_id": d["doc_id"], "title": d["title"]} for d in sources["documents"]],
        "chunks": [{k: p[k] for k in ("doc_id", "title", "index", "score", "text")} for p in sources["passages"]],
        "seconds": round(answer.seconds, 2),
    }


# -------------------------------------------------------------------------------------- companion tools


class AbsorbInput(BaseModel):
    text: str | None = Field(default=None, description="The document's text (give this or `path`).")
    path: str | None = Field(default=None, description="A text, Markdown, PDF or HTML file to read (or give `text`); "
                                                       "only files in the allowed folders can be read.")
    title: str | None = Field(default=None, description="A title; default: its first heading or the file name.")
    route: Literal["auto", "absorb", "retrieve", "context"] = Field(
        default="auto",
        description="auto (default) decides by length and absorption time; absorb trains an adapter (LIFT); "
                    "retrieve indexes it for retrieval only; context passes it whole with each question.",
    )


class AbsorbDocument(_LiftTool):
    """Store a document: absorbed into an adapter, kept for retrieval, or passed in context, as routed."""

    name: str = "lift_absorb"
    description: str = (
        "Add a document to memory, from its text or a file path. Long documents are absorbed into the model's "
        "parameters (LIFT) when that fits the time budget, otherwise indexed for retrieval; short ones are passed "
        "whole. Every document is also indexed for retrieval. Returns the document's id and how it was stored."
    )
    args_schema: type[BaseModel] = AbsorbInput
    usage: str = '{"text": "<the document>"} or {"path": "<file>"}, optionally "title" and "route"'
    budget_seconds: float | None = DEFAULT_BUDGET_SECONDS  # longest acceptable absorption
    background: bool = False  # absorb in a thread and answer at once
    measure_throughput: bool = True  # False: estimate absorption time from a prior instead of measuring once

    def _act(self, text: str | None = None, path: str | None = None, title: str | None = None,
             route: str = "auto") -> str:
        from lift_tool.documents import make_document
        from lift_tool.routing import plan_route, store_routed

        if (text is None) == (path is None):
            raise ToolException(f"Error: {self.name} needs exactly one of `text` or `path`. Call it again with {self.usage}.")
        lift = self.memory()
        # A path is always a path here (Lift.read reads it, with the size limit, if it lies in an allowed folder);
        # a text is always text.
        document = make_document(text, title=title) if text is not None else lift.read(Path(path), title, confined=True)
        override = None if route == "auto" else route
        decision = plan_route(lift, document, override, self.budget_seconds, self.measure_throughput)
        routed = store_routed(lift, document, decision, background=self.background)
        outcome = {
            "absorbed": f"Absorbed into an adapter in {routed.seconds:.0f} s.",
            "absorbing": "Absorbing in the background; until it is done, questions are answered from retrieval "
                         "(lift_list shows when it is done).",
            "failed": f"Absorption failed ({routed.error}); it is kept for retrieval.",
            "in context": "Questions about it pass the whole document to the model.",
            "indexed": "Questions about it are answered from retrieved passages.",
        }[routed.status]
        return (f"Stored {_doc_label(routed.doc_id, routed.title)} ({routed.tokens:,} tokens), route "
                f"{routed.route}: {routed.reason}. {outcome}")


class ListInput(BaseModel):
    pass


class ListDocuments(_LiftTool):
    """List the stored documents, with how each is stored and whether its absorption has finished."""

    name: str = "lift_list"
    description: str = "List the documents in memory: id, title, length, how each is stored and whether it is absorbed."
    args_schema: type[BaseModel] = ListInput
    usage: str = "no arguments: {}"

    def _act(self) -> str:
        documents = self.memory().documents()
        if not documents:
            return "The memory is empty: add a document with lift_absorb."
        lines = [f"{len(documents)} document(s):"]
        for doc in documents:
            status = self.memory().absorption_status(doc.doc_id)
            state = status.state + (f" ({status.error})" if status.error else "")
            if doc.coverage is not None and doc.coverage < 1:
                state += f", its adapter covers {doc.coverage:.0%} of it (absorption was cut at its time budget)"
            lines.append(f"- {_doc_label(doc.doc_id, doc.title)}: {doc.tokens:,} tokens, route {doc.route}, {state}")
        return "\n".join(lines)


class ForgetInput(BaseModel):
    document: str = Field(description="The document to remove: its id, an id prefix or its exact title.")


class ForgetDocument(_LiftTool):
    """Remove a document from memory: its adapters, its text and its retrieval passages."""

    name: str = "lift_forget"
    description: str = "Remove a document from memory: its adapters, its text and its retrieval index."
    args_schema: type[BaseModel] = ForgetInput
    usage: str = '{"document": "<id, id prefix or exact title>"}'

    def _act(self, document: str) -> str:
        removed = self.memory().forget(document)
        return f"Forgot {_doc_label(removed.doc_id, removed.title)}: its adapters, text and retrieval passages are gone."


class LiftToolkit(BaseToolkit):
    """The four lift tools on one memory: ask (``lift_memory``), ``lift_absorb``, ``lift_list``, ``lift_forget``."""

    lift: Any = Field(default=None, exclude=True)  # a Lift; None: the shared one for the environment's settings
    budget_seconds: float | None = DEFAULT_BUDGET_SECONDS
    background: bool = False
    measure_throughput: bool = True

    def get_tools(self) -> list[BaseTool]:
        shared = {"lift": self.lift}
        return [
            LiftMemory(**shared),
            AbsorbDocument(**shared, budget_seconds=self.budget_seconds, background=self.background,
                           measure_throughput=self.measure_throughput),
            ListDocuments(**shared),
            ForgetDocument(**shared),
        ]


__all__ = ["LiftMemory", "AbsorbDocument", "ListDocuments", "ForgetDocument", "LiftToolkit", "explain_bad_arguments"]
