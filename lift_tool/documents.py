"""Read a document from a file or a string, with clear errors for input a user can get wrong.

Plain text and Markdown are read directly; PDF through pypdf and HTML through BeautifulSoup.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from lift_tool.errors import InputError
from lift_tool.memory.manifest import title_problem
from lift_tool.segment import document_id, normalise_text

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".text", ""}
DOCUMENT_SUFFIXES = (TEXT_SUFFIXES - {""}) | {".pdf", ".html", ".htm"}  # the files read as documents


@dataclass(frozen=True)
class Document:
    """A document read and normalised; ``doc_id`` is the sha256 of its text, so the same text is the same document."""

    text: str  # normalised
    title: str
    doc_id: str
    source: str | None = None  # the file it came from, if any


def make_document(text: str, title: str | None = None, source: str | None = None) -> Document:
    """Normalise and check a text; the title defaults to its first Markdown heading or first line."""
    if "\x00" in text:
        raise InputError(f"{source or 'the text'} looks binary (it contains NUL bytes): give a text, Markdown, PDF or HTML file")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(f"{source or 'the text'} holds characters that are not valid Unicode (a lone surrogate at "
                         f"character {err.start:,}): give it as UTF-8 text") from None
    text = normalise_text(text)
    if not text:
        raise InputError(f"{source or 'the document'} is empty: there is nothing to absorb")
    if title is not None and title_problem(title):
        raise InputError(f"{title!a} cannot be a document's title: {title_problem(title)}")
    return Document(text=text, title=title or guess_title(text, source), doc_id=document_id(text), source=source)


def guess_title(text: str, source: str | None = None) -> str:
    """The first Markdown heading, else the file's name, else the first line; control characters left out."""
    heading = re.search(r"^#{1,3}\s+(.+)$", text, flags=re.MULTILINE)
    if heading:
        title = heading.group(1).strip()[:120]
    elif source:
        title = Path(source).stem
    else:
        first_line = text.split("\n", 1)[0].strip()
        title = (first_line[:80] + "…") if len(first_line) > 80 else first_line
    return "".join(ch for ch in title if unicodedata.category(ch) != "Cc").strip()


MAX_DOCUMENT_BYTES = 64 * 2**20  # the default of settings.max_document_bytes


def file_name(path: str | Path) -> Path:
    """``path`` as a Path, if it can name a file: a NUL character, or a lone surrogate (text that is not valid
    Unicode, which the filesystem cannot be asked about), is an InputError instead of a raw ValueError."""
    try:
        os.fsencode(path)  # what the filesystem is asked, undecodable bytes in file names included
    except UnicodeEncodeError:
        raise InputError(f"{str(path)!a} is not a file name: it holds characters that are not valid Unicode") from None
    if "\x00" in str(path):
        raise InputError(f"{str(path)!a} is not a file name: it holds a NUL character") from None
    return Path(path)


def confine(path: str | Path, roots: "list[Path]") -> Path:
    """``path`` resolved (``~``, ``..`` and every symlink followed), if that lies in one of the folders ``roots``;
    otherwise an :class:`InputError` that names the setting. For files that an agent asks to have read: a path
    from untrusted text must not reach ``~/.ssh`` or ``/etc``, directly or through a link."""
    real = file_name(path).expanduser().resolve()
    for root in roots:
        if real.is_relative_to(Path(root).expanduser().resolve()):
            return real
    folders = ", ".join(str(root) for root in roots) or "none"
    raise InputError(f"{path} is outside the folders that may be read ({folders}): move it into one of them, or add "
                     "its folder to the setting LIFT_ALLOWED_ROOTS (folders separated by ':')")


def read_document(path: str | Path, title: str | None = None, max_bytes: int = MAX_DOCUMENT_BYTES) -> Document:
    """A document from a file: only a regular file (not a device, FIFO or socket), of at most ``max_bytes``."""
    path = file_name(path).expanduser()
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputError(f"file not found: {path}") from None
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path} is a folder: give one document file")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path} is not a regular file (a device, a pipe or a socket): give a document file")
    if info.st_size > max_bytes:
        raise InputError(f"{path} is {info.st_size:,} bytes, over the limit of {max_bytes:,} bytes for a document "
                         "(LIFT_MAX_DOCUMENT_BYTES): split it, or raise the limit")
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        text = _read_pdf(path)
    elif suffix in {".html", ".htm"}:
        text = _html_to_text(_decode(_read_at_most(path, max_bytes), path))
    else:
        raw = _read_at_most(path, max_bytes)
        if suffix not in TEXT_SUFFIXES and _looks_binary(raw):
            raise InputError(f"{path} is not a text file (unsupported type {suffix!r}): give text, Markdown, PDF or HTML")
        text = _decode(raw, path)
    return make_document(text, title=title, source=str(path))


def _read_at_most(path: Path, max_bytes: int) -> bytes:
    """The file's bytes; a file that grew past the limit since it was checked is refused, not read to the end."""
    with open(path, "rb") as handle:
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise InputError(f"{path} is over the limit of {max_bytes:,} bytes for a document (LIFT_MAX_DOCUMENT_BYTES)")
    return raw


def _looks_binary(raw: bytes) -> bool:
    return b"\x00" in raw[:8192]


def _decode(raw: bytes, path: Path) -> str:
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 with its byte-order mark: NUL bytes are expected
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            raise InputError(f"{path} starts as UTF-16 but is not valid UTF-16: convert it to UTF-8 first") from None
    if _looks_binary(raw):
        raise InputError(f"{path} looks binary (it contains NUL bytes): give a text, Markdown, PDF or HTML file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    raise InputError(f"{path} is not valid UTF-8 text: convert it to UTF-8 first (for example with iconv)")


def _read_pdf(path: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, OSError) as err:
        raise InputError(f"could not read the PDF {path}: {err}") from None
    text = "\n\n".join(pages)
    if not text.strip():
        raise InputError(f"{path} has no extractable text (a scanned PDF needs OCR first)")
    return text


def _html_to_text(html: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(strip=True) if soup.title else ""
    for tag in soup(["title", "script", "style", "noscript", "nav", "footer", "header"]):
        tag.decompose()
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in soup.get_text("\n").split("\n")]
    text = "\n".join(line for line in lines if line)
    return f"# {title}\n\n{text}" if title else text  # the heading becomes the document's title
