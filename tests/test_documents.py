import pytest

from lift_tool.documents import make_document, read_document
from lift_tool.errors import InputError


def test_markdown_title_and_id(tmp_path):
    path = tmp_path / "note.md"
    path.write_text("# The Brimley Canal\n\nIt opened in 1841.\n", encoding="utf-8")
    document = read_document(path)
    assert document.title == "The Brimley Canal"
    assert document.text.startswith("# The Brimley Canal")
    assert len(document.doc_id) == 64
    assert read_document(path, title="Other").title == "Other"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"   \n\t \n", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        (b"caf\xe9 au lait", "UTF-8"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "doc.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_document(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_document(tmp_path / "nope.txt")
    with pytest.raises(InputError, match="folder"):
        read_document(tmp_path)


def test_html_is_reduced_to_text(tmp_path):
    path = tmp_path / "page.html"
    path.write_text("<html><head><title>Canal</title><script>var x=1;</script></head>"
                    "<body><nav>menu</nav><p>The canal opened in <b>1841</b>.</p></body></html>")
    document = read_document(path)
    assert "opened in" in document.text and "1841" in document.text
    assert "var x" not in document.text and "menu" not in document.text
    assert document.title == "Canal"


def test_pdf_text_is_extracted(tmp_path):
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    page = writer.add_blank_page(width=300, height=200)
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})})
    stream = DecodedStreamObject()
    stream.set_data(b"BT /F1 12 Tf 20 100 Td (The canal opened in 1841.) Tj ET")
    page[NameObject("/Contents")] = writer._add_object(stream)
    path = tmp_path / "doc.pdf"
    with open(path, "wb") as handle:
        writer.write(handle)
    assert "opened in 1841" in read_document(path).text


def test_broken_pdf(tmp_path):
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.4 this is not really a pdf")
    with pytest.raises(InputError):
        read_document(path)


def test_text_with_nul_is_refused():
    with pytest.raises(InputError, match="binary"):
        make_document("abc\x00def")


@pytest.mark.parametrize("title", ["Alpha\x1b[2J\x1b[H", "Two\nlines", "lone \ud800 surrogate", "   "])
def test_a_title_that_could_rewrite_the_terminal_is_refused_before_anything_is_stored(title, tmp_path):
    from lift_tool.memory.registry import Registry

    with pytest.raises(InputError, match="cannot be a document's title"):
        make_document("Some text about Alpha.", title=title)
    registry = Registry(tmp_path / "home")
    with pytest.raises(InputError, match="cannot be a document's title"):
        registry.add_document("a" * 64, title, "Some text about Alpha.", tokens=5)
    assert registry.list_documents() == [] and list(registry.documents_dir.iterdir()) == []


def test_a_guessed_title_leaves_control_characters_out():
    assert make_document("# Alpha\x1b[31m red\n\nText.").title == "Alpha[31m red"


def test_only_regular_files_are_read(tmp_path):
    """A FIFO named .txt would block the read forever, /dev/zero would fill the memory: both are refused at once."""
    import os

    fifo = tmp_path / "notes.txt"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        read_document(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        read_document("/dev/zero")


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    sparse = tmp_path / "huge.txt"
    with open(sparse, "wb") as handle:  # 3 GB that take no disk: reading them would end in MemoryError
        handle.truncate(3 * 2**30)
    with pytest.raises(InputError, match="LIFT_MAX_DOCUMENT_BYTES"):
        read_document(sparse)
    small = tmp_path / "small.md"
    small.write_text("# Small\n\n" + "A sentence about the harbour. " * 40)
    with pytest.raises(InputError, match="over the limit of 100 bytes"):
        read_document(small, max_bytes=100)
    assert read_document(small, max_bytes=10_000).title == "Small"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_text_with_a_byte_order_mark_is_read(tmp_path, encoding):
    path = tmp_path / "notes.txt"
    text = "# Notes\n\nThe ferry leaves at nine."
    data = text.encode(encoding)
    if encoding != "utf-16":  # plain utf-16 writes its mark itself
        data = ("\ufeff" + text).encode(encoding)
    path.write_bytes(data)
    document = read_document(path)
    assert document.title == "Notes" and document.text == text
