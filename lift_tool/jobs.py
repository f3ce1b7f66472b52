"""Background absorption: train a document's adapter in a thread while the memory goes on answering.

The document is indexed for retrieval first, so questions about it are answered meanwhile; its adapter lands when
training ends. Each absorption keeps a status file, ``<home>/jobs/<doc_id>.json``, so that another process (``lift
list``, a second agent on the same memory) can tell how it stands; a status left "running" by a process that has
ended reads as "interrupted". At exit, running absorptions stop at their next training step.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from lift_tool.errors import AbsorptionInterrupted, LiftError
from lift_tool.files import pid_alive, read_json, write_json

if TYPE_CHECKING:
    from lift_tool.lift import AbsorbResult
    from lift_tool.memory.registry import DocumentEntry
    from lift_tool.training.loop import StepReport

_log = logging.getLogger("lift_tool")
JOBS_DIR = "jobs"  # under home: one status file per document absorbed in the background
JOB_STATES = ("running", "done", "failed", "cancelled", "interrupted")


@dataclass
class AbsorptionStatus:
    """Where a document's absorption stands (see :meth:`BackgroundJobs.status`)."""

    doc_id: str
    title: str
    state: str  # absorbed | running | failed | cancelled | interrupted | not absorbed
    error: str | None
    route: str  # the document's route in the registry ("retrieve" until an adapter lands)


class AbsorptionJob:
    """One background absorption (see :meth:`Lift.absorb_in_background`)."""

    def __init__(self, doc_id: str, title: str, home: Path):
        self.doc_id = doc_id
        self.title = title
        self.state = "running"  # running | done | failed | cancelled
        self.error: str | None = None
        self.result: "AbsorbResult | None" = None
        self.started = time.time()
        self.home = Path(home)
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> "AbsorptionJob":
        """Block until the absorption has ended (or ``timeout`` seconds have passed)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self

    def cancel(self) -> None:
        """Stop after the current training step; nothing is stored and the document stays retrieval-only."""
        self._cancel.set()

    def status_record(self) -> dict:
        return {"doc_id": self.doc_id, "title": self.title, "state": self.state, "error": self.error,
                "pid": os.getpid(), "started": self.started, "updated": time.time()}

    def write_status(self) -> None:
        path = status_path(self.home, self.doc_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, self.status_record(), indent=None)

    def start(self, absorb: "Callable[[Callable[[StepReport], None], threading.Event], AbsorbResult]") -> None:
        """Run ``absorb(on_step, cancelled)`` in a thread; ``on_step`` stops the training once the job is cancelled
        (``cancelled`` is set then too, for training that runs elsewhere)."""

        def stop_when_cancelled(report: "StepReport") -> None:
            if self._cancel.is_set():
                raise AbsorptionInterrupted("absorption was cancelled before it finished: nothing was stored")

        def run() -> None:
            try:
                self.result = absorb(stop_when_cancelled, self._cancel)
                self.state = "done"
            except BaseException as err:  # noqa: BLE001 - whatever it was, the document stays retrieval-only
                self.state = "cancelled" if isinstance(err, AbsorptionInterrupted) else "failed"
                self.error = str(err) if isinstance(err, LiftError) else f"{type(err).__name__}: {err}"
                _log.warning("background absorption of %r %s: %s", self.title, self.state, self.error)
            finally:
                self.write_status()

        self._thread = threading.Thread(target=run, name=f"lift-absorb-{self.doc_id[:12]}", daemon=True)
        self._thread.start()
        _RUNNING_JOBS.add(self)


class BackgroundJobs:
    """The background absorptions of one memory folder (``home``) started by one ``Lift``, by document."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self._jobs: dict[str, AbsorptionJob] = {}
        self._lock = threading.Lock()

    def start(self, doc_id: str, title: str, prepare: Callable[[], None],
              absorb: "Callable[[Callable[[StepReport], None], threading.Event], AbsorbResult]") -> AbsorptionJob:
        """Call ``prepare()`` (index the document), then ``absorb(on_step, cancelled)`` in a thread; the job, at once.

        A document that is being absorbed already gets its running job back.
        """
        with self._lock:
            running = self._jobs.get(doc_id)
            if running is not None and running.state == "running":
                return running
            prepare()
            job = AbsorptionJob(doc_id, title, home=self.home)
            self._jobs[doc_id] = job
        job.write_status()
        job.start(absorb)
        return job

    def stop(self, doc_id: str) -> None:
        """Cancel the document's absorption, if one is running, and wait until it has stopped."""
        with self._lock:
            job = self._jobs.pop(doc_id, None)
        if job is not None and job.running:
            job.cancel()
            job.wait()  # outside any lock the job needs to finish

    def remove_status(self, doc_id: str) -> None:
        status_path(self.home, doc_id).unlink(missing_ok=True)

    def status(self, entry: "DocumentEntry") -> AbsorptionStatus:
        """Where the absorption of ``entry`` stands: "absorbed", "running", "failed", "cancelled", "interrupted"
        (the process absorbing it ended first) or "not absorbed" (retrieval or context only)."""
        job = self._jobs.get(entry.doc_id) or next(
            (j for j in list(_RUNNING_JOBS) if j.doc_id == entry.doc_id and j.home == self.home), None)
        record = job.status_record() if job is not None else read_status(self.home, entry.doc_id)
        running = record is not None and record["state"] == "running"
        if record is None or record["state"] == "done" or (entry.adapters and not running):
            state = "absorbed" if entry.adapters else "not absorbed"  # (absorbed since, if an attempt failed)
            return AbsorptionStatus(entry.doc_id, entry.title, state, None, entry.route)
        if running:
            alive = job.running if job is not None else (record.get("pid") != os.getpid() and pid_alive(record.get("pid")))
            if not alive:
                record = {**record, "state": "interrupted",
                          "error": ("the process absorbing it ended before it finished: absorb the document "
                                    "again (it goes on from the last checkpoint of its training, if one was saved)")}
        return AbsorptionStatus(entry.doc_id, entry.title, record["state"], record.get("error"), entry.route)


def status_path(home: Path, doc_id: str) -> Path:
    """Where the status of a document's background absorption is kept."""
    return Path(home) / JOBS_DIR / f"{doc_id}.json"


def read_status(home: Path, doc_id: str) -> dict | None:
    """The status file of a document's background absorption, if there is a valid one."""
    record = read_json(status_path(home, doc_id))
    return record if isinstance(record, dict) and record.get("state") in JOB_STATES else None


_RUNNING_JOBS: "weakref.WeakSet[AbsorptionJob]" = weakref.WeakSet()


@atexit.register
def _cancel_running_jobs() -> None:
    """At exit, stop background absorptions at their next step (a daemon thread killed inside torch can crash
    the interpreter) and record them as cancelled."""
    jobs = [job for job in list(_RUNNING_JOBS) if job.running]
    for job in jobs:
        job.cancel()
    for job in jobs:
        job.wait(timeout=30)


__all__ = ["JOBS_DIR", "AbsorptionJob", "AbsorptionStatus", "BackgroundJobs", "read_status"]
