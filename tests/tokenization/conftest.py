"""Fixtures of the tokenization tests: the official-tokenizer case and the bundled vocabulary."""

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
    return {name: json.loads((official_dir / f"{name}.expected.json").read_text()) for name in FIXTURE_FILES}


@pytest.fixture(scope="session")
def vocabulary() -> GeneVocabulary:
    return GeneVocabulary.bundled()
