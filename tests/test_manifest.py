"""A manifest read from disk is checked before anything trusts it."""

import pytest

from lift_tool.errors import CorruptAdapterError
from lift_tool.memory.manifest import Manifest

FIELDS = {"doc_id": "a" * 64, "title": "Brimley", "tokens": 58, "base_model": "tiny", "base_fingerprint": "f",
          "settings_fingerprint": "s", "train_seconds": 1.5, "created": "2026-12-06T12:00:00+00:00"}


@pytest.mark.parametrize("coverage", [0.0, 0.4, 1, None])
def test_a_share_of_the_document_is_a_coverage(coverage):
    assert Manifest.from_json({**FIELDS, "coverage": coverage}, "here").coverage == coverage


def test_a_manifest_written_before_coverage_existed_reads_as_unknown():
    assert Manifest.from_json(FIELDS, "here").coverage is None


@pytest.mark.parametrize("coverage", ["all", True, -0.1, 1.5, [1]])
def test_a_coverage_that_is_no_share_is_refused(coverage):
    with pytest.raises(CorruptAdapterError, match="coverage"):
        Manifest.from_json({**FIELDS, "coverage": coverage}, "here")
