"""The research assistant: a question and a folder of documents in, a short report with citations out.

    ingest ──► plan ──► answer ──► write ──► END      (ingest ends the run when the folder has no documents)

- **ingest**: every document in the folder (text, Markdown, PDF, HTML) goes through the router graph: in context,
  absorbed, or retrieval only, each with its reason;
- **plan**: the planner breaks the question into sub-questions (the question itself is always the first);
- **answer**: each sub-question is answered from memory (``Lift.ask``) with the documents it is about, citing
  the documents and passages;
- **write**: the writer turns the findings into a short report; the numbered source list is always added.

Offline it runs on the local model: the planner is ``LiftChatModel`` without memory, and the report is assembled
from the findings (a 135M model writes poor prose; the point is the whole flow). Any LangChain chat model can plan
and write instead: ``build_graph(planner=..., writer=...)``, or ``chat_model: "provider:model"`` in the
configuration (``init_chat_model``).

Input: ``{"question": "...", "folder": "path/to/documents"}``. Context (or ``configurable``): see
``lift_tool.graphs.Configuration`` (``max_sub_questions``, ``budget_seconds``, ``route_override``, ...).

As a subgraph: add the compiled graph as a node of a larger graph whose state has ``question`` and ``folder``
(and ``report``, ``findings``, ... to receive them): ``parent.add_node("research", build_graph())``. It reads the
parent's context when that is a ``Configuration`` (or a dict), else ``configurable``; absorption progress from
ingesting reaches the parent's ``stream(..., stream_mode="custom", subgraphs=True)``.
"""

from __future__ import annotations

import functools
import logging
import operator
import re
from pathlib import Path
from typing import Annotated, Any

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from lift_tool.documents import DOCUMENT_SUFFIXES, confine
from lift_tool.errors import InputError, LiftError
from lift_tool.graphs import Configuration

_log = logging.getLogger("lift_tool.research")
PLAN_PROMPT = (
    "You plan research over a set of documents. Break the user's question into at most {n} short, self-contained "
    "sub-questions that the documents could answer. Write one question per line, nothing else."
)
WRITE_PROMPT = (
    "Write a short research report (at most three paragraphs) that answers the question from the findings below. "
    "Cite the sources by their numbers in square brackets, like [1]. Use only what the findings say."
)


class ResearchInput(TypedDict):
    question: str
    folder: str


class ResearchOutput(TypedDict, total=False):
    report: str
    documents: list[dict]  # each file: path, doc_id, title, route, reason, status, error
    sub_questions: list[str]
    findings: list[dict]  # each sub-question: question, answer, mode, sources [{n, doc_id, title, passages}]
    log: Annotated[list[str], operator.add]


class ResearchState(ResearchInput, ResearchOutput, total=False):
    pass


# ---------------------------------------------------------------------------------------------------- nodes


def ingest(state: ResearchState, config: RunnableConfig, runtime: Runtime[Configuration]) -> dict[str, Any]:
    """Send every document in the folder through the router. The folder, named by the run's input, is listed only
    when it lies in the folders that may be read (``allowed_roots``), as each file is read only from there."""
    from lift_tool.graphs.router import graph as router

    if not state.get("folder"):
        return _stop("no folder was given: give a folder of documents")
    try:
        folder = confine(state["folder"], Configuration.of(runtime, config).lift_settings().allowed_roots)
    except InputError as err:
        return _stop(str(err))
    if not folder.is_dir():
        return _stop(f"the folder {state['folder']!r} does not exist: give a folder of documents")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES
                   and not p.name.startswith("."))
    if not files:
        return _stop(f"no documents in {folder}: add text, Markdown, PDF or HTML files")
    documents, log = [], []
    for path in files:
        routed = router.invoke({"source": str(path)}, config)
        documents.append({"path": str(path), **{k: routed.get(k) for k in ("doc_id", "title", "route", "reason", "status", "error")}})
        log += routed.get("log", [])
    if not any(document["doc_id"] for document in documents):  # else the answers would come from other documents
        failures = "; ".join(f"{Path(d['path']).name}: {d['error']}" for d in documents)
        return {**_stop(f"none of the documents in {folder} could be read ({failures})"), "documents": documents}
    return {"documents": documents, "log": log}


def _stop(problem: str) -> dict[str, Any]:
    return {"documents": [], "report": f"No report: {problem}.", "log": [f"error: {problem}"]}


def plan(state: ResearchState, config: RunnableConfig, runtime: Runtime[Configuration], planner: Any = None
         ) -> dict[str, Any]:
    """Break the question into sub-questions (the question itself first)."""
    configuration = Configuration.of(runtime, config)
    question = state["question"].strip()
    n = max(1, configuration.max_sub_questions)
    titles = ", ".join(d["title"] for d in state["documents"] if d.get("doc_id"))
    model = planner or _configured_model(configuration) or _local_planner(configuration)
    reply = model.invoke([
        SystemMessage(PLAN_PROMPT.format(n=n)),
        HumanMessage(f"Documents: {titles}\n\nQuestion: {question}"),
    ])
    # The question, its own parts ("how ... and where ..."), then the planner's questions; lines that are not
    # questions are dropped (a small local model often answers instead of planning).
    candidates = [question, *split_question(question)]
    candidates += [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip() for line in reply.text.splitlines()]
    sub_questions: list[str] = []
    for candidate in candidates:
        if candidate.endswith("?") and len(candidate.split()) >= 3 and candidate.lower() not in {q.lower() for q in sub_questions}:
            sub_questions.append(candidate)
    sub_questions = (sub_questions or [question])[: n + 1]  # the question itself, and up to n sub-questions
    return {"sub_questions": sub_questions, "log": [f"planned {len(sub_questions)} question(s)"]}


QUESTION_WORDS = r"(?:how|what|where|when|who|whom|which|why|is|are|was|were|does|do|did|can|could|has|have)"


def split_question(question: str) -> list[str]:
    """The parts of a compound question: "How does X earn a living, and where does its power come from?" gives
    "How does X earn a living?" and "Where does its power come from?"."""
    parts = re.split(rf"(?:,|;)?\s+and\s+(?={QUESTION_WORDS}\b)|;\s*", question.strip().rstrip("?"), flags=re.IGNORECASE)
    parts = [part.strip(" ,") for part in parts if len(part.split()) >= 3]
    return [part[0].upper() + part[1:] + "?" for part in parts] if len(parts) > 1 else []


def answer(state: ResearchState, config: RunnableConfig, runtime: Runtime[Configuration]) -> dict[str, Any]:
    """Answer each sub-question from memory, with the folder's documents it is about."""
    configuration = Configuration.of(runtime, config)
    lift = configuration.lift()
    ingested = [d["doc_id"] for d in state["documents"] if d.get("doc_id")]
    findings = []
    for question in state["sub_questions"]:
        about = [entry.doc_id for entry in lift.choose_documents(question) if entry.doc_id in ingested]
        # None of them seems to be about it: let retrieval find the nearest passages across the folder.
        documents, mode = (about, configuration.mode) if about else (ingested, "rag")
        try:
            reply = lift.ask(question, documents, mode=mode)
        except LiftError as err:
            findings.append({"question": question, "answer": f"(not answered: {err})", "mode": "none", "sources": []})
            continue
        findings.append({"question": question, "answer": reply.text, "mode": reply.mode,
                         "sources": reply.sources()["documents"]})
    return {"findings": findings, "log": [f"answered {len(findings)} question(s) from memory"]}


def write(state: ResearchState, config: RunnableConfig, runtime: Runtime[Configuration], writer: Any = None
          ) -> dict[str, Any]:
    """Write the report: by the writer model when there is one, else assembled from the findings."""
    configuration = Configuration.of(runtime, config)
    numbers: dict[str, int] = {}  # doc_id -> source number, in order of first citation
    for finding in state["findings"]:
        for source in finding["sources"]:
            numbers.setdefault(source["doc_id"], len(numbers) + 1)
    titles = {s["doc_id"]: s["title"] for f in state["findings"] for s in f["sources"]}
    routes = {d["doc_id"]: d for d in state["documents"] if d.get("doc_id")}

    def cite(finding: dict) -> str:
        return "".join(f"[{numbers[s['doc_id']]}]" for s in finding["sources"])

    findings_text = "\n".join(f"- {f['question']} {f['answer'].strip() or '(no answer)'} {cite(f)}" for f in state["findings"])
    model = writer or _configured_model(configuration)
    if model is not None:
        body = model.invoke([SystemMessage(WRITE_PROMPT),
                             HumanMessage(f"Question: {state['question']}\n\nFindings:\n{findings_text}")]).text.strip()
    else:
        body = "\n\n".join(f"**{f['question']}**\n{f['answer'].strip() or '(no answer)'} {cite(f)}".rstrip()
                           for f in state["findings"])
    sources = []
    for doc_id, number in numbers.items():
        document = routes.get(doc_id, {})
        how = f"{document.get('route')}: {document.get('reason')}" if document else "stored earlier"
        sources.append(f"[{number}] {titles[doc_id]} ({doc_id[:12]}; {how})")
    report = f"# {state['question'].strip()}\n\n{body}\n\n## Sources\n" + ("\n".join(sources) or "(none)") + "\n"
    return {"report": report, "log": ["wrote the report"]}


# -------------------------------------------------------------------------------------------------- models


def _configured_model(configuration: Configuration):
    if not configuration.chat_model:
        return None
    from langchain.chat_models import init_chat_model

    return init_chat_model(configuration.chat_model)


def _local_planner(configuration: Configuration):
    from lift_tool.chat_model import LiftChatModel

    return LiftChatModel(lift=configuration.lift(), mode="base", max_new_tokens=96)


# --------------------------------------------------------------------------------------------------- graph


def after_ingest(state: ResearchState) -> str:
    return "plan" if any(document.get("doc_id") for document in state.get("documents", [])) else END


def build_graph(checkpointer=None, planner: Any = None, writer: Any = None):
    """The research assistant; ``planner`` and ``writer``: LangChain chat models to use instead of the local
    defaults (or name one with ``chat_model`` in the configuration)."""
    builder = StateGraph(ResearchState, input_schema=ResearchInput, output_schema=ResearchOutput,
                         context_schema=Configuration)
    builder.add_node("ingest", ingest)
    builder.add_node("plan", functools.partial(plan, planner=planner))
    builder.add_node("answer", answer)
    builder.add_node("write", functools.partial(write, writer=writer))
    builder.add_edge(START, "ingest")
    builder.add_conditional_edges("ingest", after_ingest, ["plan", END])
    builder.add_edge("plan", "answer")
    builder.add_edge("answer", "write")
    builder.add_edge("write", END)
    return builder.compile(checkpointer=checkpointer, name="research_assistant")


graph = build_graph()
