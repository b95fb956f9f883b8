"""Fixtures of the tokenization tests: the official-tokenizer case and the bundled vocabulary."""

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from lightning_langcell.tokenization import GeneVocabulary
from tokenization_helpers import FIXTURE_FILES


@pytest.fixture(scope="session")
def official_dir(test_data_dir: Path) -> Path:
    return test_data_dir / "langcell-official-tokenizer"


@pytest.fixture(scope="session")
def official_expected(official_dir: Path) -> dict:
    """The official outputs, stored gzip-compressed (``<name>.expected.json.gz``); the decompressed
    bytes must match the upstream checksums in ``SHA256SUMS``."""
    sums = dict(line.split()[::-1] for line in (official_dir / "SHA256SUMS").read_text().splitlines() if line)
    expected = {}
    for name in FIXTURE_FILES:
        raw = gzip.decompress((official_dir / f"{name}.expected.json.gz").read_bytes())
        assert hashlib.sha256(raw).hexdigest() == sums[f"{name}.expected.json"], name
        expected[name] = json.loads(raw)
    return expected


@pytest.fixture(scope="session")
def vocabulary() -> GeneVocabulary:
    return GeneVocabulary.bundled()
