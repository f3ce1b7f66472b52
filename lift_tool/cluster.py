"""Absorption on a Ray cluster: each document trained as a job on a worker, its adapter committed here.

``LIFT_CLUSTER__ADDRESS`` (``auto``, ``host:port`` of a head started with ``ray start --head``, or ``ray://host:port``)
sends absorption to the cluster. A job loads the base model on its worker (once per worker process: later jobs
there reuse it), trains the adapter into a temporary folder and returns its files; ``Lift.absorb`` writes them into
a staging folder of the registry and commits them exactly as after a local absorption, so the registry stays the
one source of truth and never holds a half-written adapter. A worker that dies during a job is replaced and the job
run again by Ray, up to ``max_retries`` times; after that the document is reported failed (it stays indexed for
retrieval). Every node needs lift-tool installed, the same version, and the base model (the bundled one comes
with the package; a model folder must lie at the same path on every node).
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from lift_tool.errors import AbsorptionInterrupted, InputError, LiftError, ServerError

if TYPE_CHECKING:
    from lift_tool.config import Settings
    from lift_tool.documents import Document
    from lift_tool.memory.manifest import Manifest

LOCAL = "unset LIFT_CLUSTER__ADDRESS to absorb in this process"
JOB_NAME = "lift_absorb"  # the job's name in Ray (its worker's process title reads ray::lift_absorb)
_MODELS: dict[tuple, object] = {}  # on a worker: (model, device, dtype) -> LoadedModel, loaded once per process


def _train_on_worker(text: str, title: str, settings_json: str) -> dict:
    """The job, run on a worker: train ``text``'s adapter and return its files (name -> bytes)."""
    from lift_tool.config import Settings
    from lift_tool.documents import make_document
    from lift_tool.models import load_model
    from lift_tool.training.absorb import absorb

    settings = Settings.model_validate_json(settings_json)
    key = (settings.model, settings.device, settings.dtype)
    if key not in _MODELS:
        _MODELS[key] = load_model(settings=settings)
    document = make_document(text, title)
    with tempfile.TemporaryDirectory(prefix="lift-job-") as folder:
        absorb(document, _MODELS[key], settings, Path(folder), progress=False)
        return {path.name: path.read_bytes() for path in Path(folder).iterdir() if path.is_file()}


class Cluster:
    """The Ray cluster at ``address``, connected on first use; the absorption jobs this process has running."""

    def __init__(self, address: str, max_retries: int = 2, cpus_per_job: float = 1.0, gpus_per_job: float = 0.0):
        self.address = address
        self.max_retries = max_retries
        self.cpus_per_job = cpus_per_job
        self.gpus_per_job = gpus_per_job
        self._job = None
        self._running: set = set()
        self._lock = threading.Lock()

    def _connect(self):
        import ray

        with self._lock:
            if self._job is None:
                self._check_reachable()
                try:
                    if not ray.is_initialized():
                        ray.init(address=self.address, log_to_driver=False, logging_level="WARNING",
                                 configure_logging=False)
                except Exception as err:  # noqa: BLE001 - unreachable, refused, no cluster there
                    raise ServerError(f"the Ray cluster at {self.address} cannot be reached ({type(err).__name__}: "
                                      f"{err}); start it (`ray start --head`) or {LOCAL}") from None
                self._job = ray.remote(_train_on_worker).options(
                    name=JOB_NAME, max_retries=self.max_retries, num_cpus=self.cpus_per_job,
                    num_gpus=self.gpus_per_job)
            return self._job

    def _check_reachable(self) -> None:
        """A head at host:port that does not accept connections fails here at once (Ray itself would keep trying
        for minutes)."""
        import socket

        if self.address == "auto":
            return
        host, _, port = self.address.removeprefix("ray://").rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
                pass
        except (OSError, ValueError) as err:
            raise ServerError(f"the Ray cluster at {self.address} cannot be reached ({err}); start it (`ray start "
                              f"--head`) or {LOCAL}") from None

    def train(self, document: "Document", settings: "Settings", folder: Path,
              stop: threading.Event | None = None) -> "Manifest":
        """Train ``document``'s adapter on a worker and write its files into ``folder``; its manifest. Setting
        ``stop`` cancels the job (AbsorptionInterrupted)."""
        import ray

        from lift_tool.memory.manifest import Manifest

        if stop is not None and stop.is_set():
            raise AbsorptionInterrupted(f"absorption of {document.title!r} was cancelled: nothing was stored")
        job = self._connect()
        # Where files go on this machine is no business of the worker's: it keeps its own defaults.
        shipped = settings.model_dump_json(exclude={"home", "cache_dir", "allowed_roots", "chroma", "server",
                                                    "cluster"})
        ref = job.remote(document.text, document.title, shipped)
        with self._lock:
            self._running.add(ref)
        try:
            while not ray.wait([ref], timeout=0.5)[0]:
                if stop is not None and stop.is_set():
                    ray.cancel(ref, force=True)
            files = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            raise AbsorptionInterrupted(f"absorption of {document.title!r} was cancelled: nothing was stored") from None
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, LiftError):  # the document's own fault (too short, say): as a local absorption says
                raise cause from None
            raise LiftError(f"absorbing {document.title!r} failed on the cluster: {err}") from None
        except ray.exceptions.RayError as err:  # the worker died more often than max_retries, the node was lost
            raise LiftError(f"absorbing {document.title!r} failed on the cluster after {self.max_retries} retries "
                            f"({type(err).__name__}); the document stays indexed for retrieval") from None
        finally:
            with self._lock:
                self._running.discard(ref)
        for name, data in files.items():
            if "/" in name or name.startswith("."):
                raise LiftError(f"the cluster returned a file named {name!r} for {document.title!r}: refused")
            (folder / name).write_bytes(data)
        manifest = Manifest.read(folder)
        if manifest.doc_id != document.doc_id:
            raise InputError(f"the cluster returned the adapter of another document for {document.title!r}")
        return manifest

    def cancel_all(self) -> None:
        """Cancel the jobs this process has running (Ctrl-C on the driver): their documents store nothing."""
        import ray

        with self._lock:
            running = list(self._running)
        for ref in running:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - finished meanwhile
                pass


__all__ = ["JOB_NAME", "Cluster"]
