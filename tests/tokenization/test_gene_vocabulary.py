"""The bundled Geneformer-30M vocabulary: ids, immutability, checksums, caching, custom dicts."""

import gzip
import hashlib
import json
import shutil

import pytest

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.tokenization import CLS_ID, MASK_ID, PAD_ID, CellTokenizer, GeneVocabulary
from lightning_langcell.tokenization import bundled

# sha256 of the canonical JSON (sorted keys, no spaces) of the bundled token dictionary + <cls>
TOKEN_CHECKSUM = "0e1bb8c937a185a4a01b7dc5894340871a4060dcc82c22b83f3630718d841b03"


def test_bundled_ids(vocabulary):
    assert (PAD_ID, MASK_ID, CLS_ID) == (0, 1, 25426)
    assert len(vocabulary) == 25427
    assert (vocabulary.pad_id, vocabulary.mask_id, vocabulary.cls_id) == (0, 1, 25426)
    assert vocabulary.token_to_id["<cls>"] == 25426
    assert vocabulary.token_to_id["ENSG00000000003"] == 2  # genes in sorted Ensembl order
    assert vocabulary.id_to_token[25425] == max(g for g in vocabulary.token_to_id if g.startswith("ENSG"))
    assert len(vocabulary.gene_median) == 25424
    assert vocabulary.gene_median["ENSG00000000003"] == pytest.approx(2.001186019549122, rel=0, abs=0)
    assert vocabulary.checksum == TOKEN_CHECKSUM


def test_bundled_files_match_upstream_checksums():
    """The decompressed resources are the upstream JSON files (shared/data/geneformer-30m/SOURCE.md)."""
    for name, digest in bundled.RESOURCE_SHA256.items():
        raw = gzip.decompress((bundled.RESOURCE_DIR / name).read_bytes())
        assert hashlib.sha256(raw).hexdigest() == digest
    assert bundled.RESOURCE_SHA256["token_dictionary.json.gz"].startswith("a24af655")


def test_vocabulary_is_immutable_and_cached(vocabulary):
    assert GeneVocabulary.bundled() is vocabulary
    with pytest.raises(AttributeError):
        vocabulary.checksum = "x"
    with pytest.raises(TypeError):
        vocabulary.token_to_id["new"] = 7
    with pytest.raises(TypeError):
        vocabulary.gene_median["ENSG00000000003"] = 1.0
    with pytest.raises(ValueError):
        vocabulary.gene_medians[0] = 1.0
    assert CellTokenizer().vocabulary is vocabulary


def test_corrupted_resource_fails_clearly(tmp_path, monkeypatch):
    for name in bundled.RESOURCE_SHA256:
        shutil.copy(bundled.RESOURCE_DIR / name, tmp_path / name)
    medians = json.loads(gzip.decompress((tmp_path / "gene_median_dictionary.json.gz").read_bytes()))
    medians["ENSG00000000003"] = 2.5
    (tmp_path / "gene_median_dictionary.json.gz").write_bytes(gzip.compress(json.dumps(medians).encode()))
    monkeypatch.setattr(bundled, "RESOURCE_DIR", tmp_path)
    bundled.load_resource.cache_clear()
    try:
        with pytest.raises(bundled.ResourceIntegrityError, match="corrupted: sha256"):
            bundled.load_resource("gene_median_dictionary.json.gz")
        (tmp_path / "token_dictionary.json.gz").write_bytes(b"not gzip")
        with pytest.raises(bundled.ResourceIntegrityError, match="missing or unreadable"):
            bundled.load_resource("token_dictionary.json.gz")
    finally:
        bundled.load_resource.cache_clear()


def test_custom_dictionaries_from_dicts_and_paths(tmp_path, vocabulary):
    genes = ["ENSG00000000003", "ENSG00000000005", "ENSG00000000419"]
    tokens = {"<pad>": 0, "<mask>": 1, **{g: i + 2 for i, g in enumerate(genes)}}
    medians = {genes[0]: 2.0, genes[1]: 4.0}
    (tmp_path / "tokens.json").write_text(json.dumps(tokens))
    (tmp_path / "medians.json").write_text(json.dumps(medians))
    from_paths = CellTokenizer(gene_median=tmp_path / "medians.json", token_dictionary=tmp_path / "tokens.json")
    from_dicts = CellTokenizer(gene_median=medians, token_dictionary=tokens)
    assert from_paths.vocabulary == from_dicts.vocabulary
    again = CellTokenizer(gene_median=tmp_path / "medians.json", token_dictionary=tmp_path / "tokens.json")
    assert again.vocabulary is from_paths.vocabulary  # built once per file version
    custom = from_dicts.vocabulary
    assert len(custom) == 6 and custom.cls_id == 5
    assert list(custom.gene_token_ids) == [2, 3]
    assert custom.checksum != vocabulary.checksum
    assert from_dicts.settings()["gene_median_checksum"] == custom.median_checksum
    # custom medians only: the bundled token ids are kept
    only_medians = CellTokenizer(gene_median=medians).vocabulary
    assert only_medians.checksum == vocabulary.checksum
    assert list(only_medians.gene_token_ids) == [2, vocabulary.token_to_id[genes[1]]]


@pytest.mark.parametrize(
    "tokens, medians, match",
    [
        ({"<pad>": 1, "<mask>": 0, "ENSG1": 2}, {"ENSG1": 1.0}, "'<pad>' to 0"),
        ({"<pad>": 0, "<mask>": 1, "ENSG1": 5}, {"ENSG1": 1.0}, "contiguous"),
        ({"<pad>": 0, "<mask>": 1, "ENSG1": 2}, {"ENSG2": 1.0}, "have no token"),
        ({"<pad>": 0, "<mask>": 1, "ENSG1": 2}, {"ENSG1": 0.0}, "finite and > 0"),
        ({"<pad>": 0, "<mask>": 1, "ENSG1": 2}, {}, "empty"),
    ],
)
def test_bad_custom_dictionaries(tokens, medians, match):
    with pytest.raises(LangCellInputError, match=match):
        GeneVocabulary(tokens, medians)


def test_missing_dictionary_file(tmp_path):
    with pytest.raises(LangCellInputError, match="does not exist"):
        CellTokenizer(gene_median=tmp_path / "nope.json")


def test_settings_are_json_and_name_the_vocabulary(vocabulary):
    settings = CellTokenizer(max_genes=100).settings()
    assert json.loads(json.dumps(settings)) == settings
    assert settings["vocabulary_checksum"] == vocabulary.checksum
    assert settings["gene_median_checksum"] == vocabulary.median_checksum
    assert settings["max_genes"] == 100 and settings["vocab_size"] == 25427
    assert len(vocabulary.gene_ids) == 25424
