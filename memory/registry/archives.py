"""One document's memory as a portable tar.gz: its text, its row, its adapters with manifests and checksums.

Writing is all or nothing (a temporary file renamed into place). Reading refuses any member that is not a plain
file at an expected place, and checks every file against the checksums in the archive, before anything is
written into a memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import stat
import tarfile
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from lift_tool.errors import CorruptAdapterError, InputError
from lift_tool.memory.registry.commit import Staged, prepare
from lift_tool.memory.registry.entries import SHORT_ID, DocumentEntry
from lift_tool.memory.registry.integrity import checksum_problem, files_in
from lift_tool.memory.registry.layout import check_doc_id, check_title

ARCHIVE_INDEX = "lift-memory.json"  # the document row and adapter rows inside an exported archive
ARCHIVE_TEXT = "document.txt"
_DOCUMENT_FIELDS = ("doc_id", "title", "tokens", "route", "created")
_MEMBER = re.compile(r"(lift-memory\.json|document\.txt|adapters/[0-9a-f]{24}/[A-Za-z0-9_.-]+)")
_KEY = re.compile(r"[0-9a-f]{24}")
ARCHIVE_MAX_BYTES = 2**30  # unpacked: one document's text and its adapters
ARCHIVE_MAX_FILES = 1_000
# Adapter weights hardly compress and texts about 4 times: an archive that unpacks to many times its size beyond a
# text's worth is a decompression bomb, whatever its total.
ARCHIVE_MAX_RATIO, ARCHIVE_RATIO_SLACK = 20, 64 * 2**20


def write_archive(document: DocumentEntry, text: str, file: Path) -> Path:
    """Write ``document`` (whose adapters the caller has checked) and its text into the archive ``file``."""
    data = text.encode("utf-8")
    contents = {
        "format": "lift-memory",
        "version": 1,
        "document": {name: getattr(document, name) for name in _DOCUMENT_FIELDS},
        "text_sha256": hashlib.sha256(data).hexdigest(),
        "adapters": [adapter.key for adapter in document.adapters],
    }
    temp = file.with_name(f".{file.name}.{secrets.token_hex(4)}.tmp")
    try:
        with tarfile.open(temp, "w:gz") as archive:
            _add_bytes(archive, ARCHIVE_INDEX, json.dumps(contents, indent=1).encode())
            _add_bytes(archive, ARCHIVE_TEXT, data)
            for adapter in document.adapters:
                for name in files_in(adapter.path):
                    _add_bytes(archive, f"adapters/{adapter.key}/{name}", (adapter.path / name).read_bytes())
        os.replace(temp, file)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return file


def read_archive(file: Path, unpacked: Path, max_bytes: int = ARCHIVE_MAX_BYTES,
                 max_files: int = ARCHIVE_MAX_FILES) -> tuple[dict[str, Any], str, list[Staged]]:
    """Unpack ``file`` into the empty staging folder ``unpacked`` and check it: the document row, its text and
    its adapters, staged and ready for ``commit``. At most ``max_files`` files and ``max_bytes`` unpacked."""
    _unpack_safely(file, unpacked, max_bytes, max_files)
    try:
        contents = json.loads((unpacked / ARCHIVE_INDEX).read_text(encoding="utf-8"))
        document = contents["document"]
        doc_id = document["doc_id"]
        keys = list(contents["adapters"])
        text = (unpacked / ARCHIVE_TEXT).read_text(encoding="utf-8")
        text_sha256 = contents["text_sha256"]
    except (KeyError, TypeError, ValueError, UnicodeDecodeError, FileNotFoundError, RecursionError) as err:
        raise InputError(f"{file} is not a lift memory archive ({err!r}): export it again with `lift export`") from None
    row = _document_row(document, file)
    if not text.strip():
        raise InputError(f"{file} is refused: its document text is empty")
    text_id = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if text_id != text_sha256:
        raise InputError(f"{file} is damaged: the document text does not match its checksum; export it again")
    if text_id != doc_id:  # an archive could otherwise put its own text and adapter under another document's id
        raise InputError(f"{file} is refused: the text it carries is not the text of document {doc_id[:SHORT_ID]} "
                         "(a document's id is the sha256 of its text)")
    staged = []
    for key in keys:
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise InputError(f"{file} is refused: {key!r} is not an adapter key; export it again with `lift export`")
        folder = unpacked / "adapters" / key
        where = f"{file}:adapters/{key}"
        problem = checksum_problem(folder)
        if problem is not None:
            raise CorruptAdapterError(f"the adapter {where} in the archive is damaged ({problem}): export it again")
        item = prepare(folder, where)
        if item.key != key or item.manifest.doc_id != doc_id:
            raise CorruptAdapterError(f"the adapter {where} does not belong to this document: export it again")
        staged.append(item)
    return row, text, staged


def _document_row(document: Any, file: Path) -> dict[str, Any]:
    """The archive's document row, every field checked before anything is written: the row must insert whole."""
    if not isinstance(document, dict) or set(_DOCUMENT_FIELDS) - set(document):
        raise InputError(f"{file} is not a lift memory archive: its document row lacks one of {', '.join(_DOCUMENT_FIELDS)}")
    check_doc_id(document["doc_id"])
    check_title(document["title"])
    tokens, route, created = document["tokens"], document["route"], document["created"]
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
        raise InputError(f"{file} is refused: its document's token count {tokens!r} is not a whole number")
    for name, value in (("route", route), ("created", created)):
        if not isinstance(value, str) or not value.isprintable() or len(value) > 64:
            raise InputError(f"{file} is refused: its document's {name} {value!r} is not a short line of text")
    return {name: document[name] for name in _DOCUMENT_FIELDS}


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = int(time.time())
    archive.addfile(info, io.BytesIO(data))


def _unpack_safely(file: Path, target: Path, max_bytes: int, max_files: int) -> None:
    """Unpack an exported archive into ``target``, refusing any member that is not a plain file at an
    expected place (the index, the text, ``adapters/<key>/<file>``), and an archive over the limits (checked on
    each member's header, before its bytes are written).

    What goes wrong reading the archive is the archive's fault (an InputError that names it); what goes wrong
    writing into ``target`` is the memory folder's (an OSError, which the registry reports as such).
    """
    try:
        info = file.stat()
        if not stat.S_ISREG(info.st_mode):  # checked before opening: opening a pipe waits for a writer
            raise InputError(f"{file} is not a regular file (a folder, a device or a pipe): give the archive that "
                             "`lift export` wrote")
        handle = open(file, "rb")
    except FileNotFoundError:
        raise InputError(f"archive not found: {file}") from None
    except OSError as err:
        raise InputError(f"cannot read the archive {file} ({err.strerror or err}): check the file") from None
    limit = min(max_bytes, ARCHIVE_MAX_RATIO * info.st_size + ARCHIVE_RATIO_SLACK)
    unpacked = 0
    with handle:
        with _reading(file):
            archive = tarfile.open(fileobj=handle, mode="r:gz")
        with archive:
            for count, member in enumerate(_members(archive, file), start=1):
                unpacked += member.size
                if count > max_files or unpacked > limit:
                    over = f"more than {max_files:,} files" if count > max_files else (
                        f"more than {limit:,} bytes unpacked" + (f" ({ARCHIVE_MAX_RATIO} times its size and more)"
                                                                  if limit < max_bytes else ""))
                    raise InputError(f"{file} is refused: it holds {over}; a lift memory archive is one document "
                                     "and its adapters")
                name = member.name
                if not member.isfile() or not _MEMBER.fullmatch(name) or ".." in name.split("/"):
                    raise InputError(
                        f"{file} is not a safe lift memory archive: it holds {name!r} "
                        f"({'not a plain file' if not member.isfile() else 'an unexpected path'}); refusing to import it"
                    )
                destination = target / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                with _reading(file):
                    source = archive.extractfile(member)
                with open(destination, "wb") as out:
                    while True:
                        with _reading(file):
                            chunk = source.read(1 << 20)
                        if not chunk:
                            break
                        out.write(chunk)


@contextmanager
def _reading(file: Path) -> Iterator[None]:
    """Reading the archive: an unreadable or damaged one is an InputError that names it."""
    try:
        yield
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:  # gzip.BadGzipFile is an OSError
        raise InputError(f"{file} is not a readable lift memory archive ({err}): export it again with `lift export`") from None


def _members(archive: tarfile.TarFile, file: Path) -> Iterator[tarfile.TarInfo]:
    """The archive's members, read one at a time (each read may fail: see :func:`_reading`)."""
    members = iter(archive)
    while True:
        with _reading(file):
            member = next(members, None)
        if member is None:
            return
        yield member
