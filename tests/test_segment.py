import pytest

from lift_tool.segment import document_id, normalise_text, segment_tokens


def test_normalise_is_canonical():
    a = "Title\r\n\r\n\r\n\r\nBody line   \r\nnext\n\n"
    b = "Title\n\nBody line\nnext"
    assert normalise_text(a) == b
    assert document_id(a) == document_id(b)
    assert document_id(a) != document_id(b + ".")


def test_segments_cover_everything_with_overlap():
    segments = segment_tokens(1000, length=256, stride=192)
    covered = set()
    for segment in segments:
        assert segment.length == 256
        covered.update(range(segment.start, segment.end))
    assert covered == set(range(1000))
    assert segments[0].overlap == 0
    assert all(segment.overlap >= 64 for segment in segments[1:])
    assert segments[-1].end == 1000  # the last window is pulled back, never a stub


def test_short_and_empty_documents():
    assert segment_tokens(10, 256, 192)[0].length == 10
    assert segment_tokens(0, 256, 192) == []


def test_bad_stride():
    with pytest.raises(ValueError):
        segment_tokens(100, 64, 128)
