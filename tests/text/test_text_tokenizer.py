"""Text tokenizer: official parity on the fixture vocab, bundled vocab, length checks."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.text import CellTextBuilder, load_text_tokenizer, text_length_check, tokenize_texts
from lightning_langcell.text.text_tokenizer import TEXT_SPECIAL_TOKENS, bundled_vocab_dir


@pytest.fixture(scope="module")
def fixture_dir(test_data_dir):
    return test_data_dir / "text_official_tiny"


@pytest.fixture(scope="module")
def class_texts(fixture_dir):
    return json.loads((fixture_dir / "inputs" / "class_texts.json").read_text())


def test_official_parity_on_fixture_vocab(fixture_dir, class_texts):
    tokenizer = load_text_tokenizer(fixture_dir / "tokenizer", add_blip_tokens=True)
    assert len(tokenizer) == 1575
    assert tokenizer.bos_token == "[DEC]" and tokenizer.bos_token_id == 1573
    assert tokenizer.convert_tokens_to_ids("[ENC]") == 1574
    encoded = tokenize_texts(class_texts, tokenizer, return_tensors="np")
    assert set(encoded) == {"input_ids", "attention_mask"}
    expected_ids = np.load(fixture_dir / "inputs" / "text_input_ids.npy")
    expected_mask = np.load(fixture_dir / "inputs" / "text_attention_mask.npy")
    assert encoded["input_ids"].shape == (4, 83)
    np.testing.assert_array_equal(encoded["input_ids"], expected_ids)
    np.testing.assert_array_equal(encoded["attention_mask"], expected_mask)
    # texts built from the bundled ontology give the same ids
    builder = CellTextBuilder()
    ids = json.loads((fixture_dir / "inputs" / "class_ids.json").read_text())
    rebuilt = tokenize_texts([builder.class_text(i) for i in ids], tokenizer, return_tensors="np")
    np.testing.assert_array_equal(rebuilt["input_ids"], expected_ids)
    # a vocab.txt path loads the same tokenizer (without the BLIP tokens)
    plain = load_text_tokenizer(fixture_dir / "tokenizer" / "vocab.txt")
    assert len(plain) == 1573
    np.testing.assert_array_equal(
        tokenize_texts(class_texts, plain, return_tensors="np")["input_ids"], expected_ids)


def test_bundled_vocab_special_tokens_and_pieces(class_texts):
    tokenizer = load_text_tokenizer()
    assert len(tokenizer) == 8000 and tokenizer.model_max_length == 512
    assert [tokenizer.convert_tokens_to_ids(t) for t in
            ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
    assert (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id) == (0, 2, 3)
    assert tokenizer.tokenize(class_texts[0]) == [
        "cell", "type", ":", "b", "cell", ".", "a", "lymphocyte", "of", "b", "lineage", "that",
        "is", "capable", "of", "b", "cell", "mediated", "immunity", ".", ";"]
    encoded = tokenize_texts(class_texts, tokenizer)
    assert isinstance(encoded["input_ids"], torch.Tensor)
    assert encoded["input_ids"].shape == (4, 74)
    assert (encoded["input_ids"] == 1).sum() == 0  # no [UNK]
    assert encoded["input_ids"][:, 0].tolist() == [2, 2, 2, 2]
    blip = load_text_tokenizer(add_blip_tokens=True)
    assert (len(blip), blip.bos_token_id, blip.convert_tokens_to_ids("[ENC]")) == (8002, 8000, 8001)
    again = load_text_tokenizer(add_blip_tokens=True)  # adding twice is harmless
    assert len(again) == 8002


def test_saved_hf_tokenizer_folder_round_trip(tmp_path, class_texts):
    tokenizer = load_text_tokenizer(add_blip_tokens=True)
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = load_text_tokenizer(tmp_path / "tok", add_blip_tokens=True)
    assert len(loaded) == 8002 and loaded.convert_tokens_to_ids("[ENC]") == 8001
    assert loaded(class_texts)["input_ids"] == tokenizer(class_texts)["input_ids"]


def test_load_errors(tmp_path):
    with pytest.raises(LangCellInputError, match="does not exist"):
        load_text_tokenizer(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LangCellInputError, match="neither a HF tokenizer nor a vocab.txt"):
        load_text_tokenizer(tmp_path / "empty")
    (tmp_path / "words.txt").write_text("[PAD]\n")
    with pytest.raises(LangCellInputError, match="named vocab.txt"):
        load_text_tokenizer(tmp_path / "words.txt")


def test_text_length_check_truncates_with_warning():
    tokenizer = load_text_tokenizer()
    long_text = "cell type: B cell. " * 100  # 6 pieces per repeat
    with pytest.warns(UserWarning, match="1 of 2 text\\(s\\) exceed 64 tokens \\(longest 602"):
        lengths = text_length_check([long_text, "B cell"], tokenizer, max_length=64)
    assert lengths.tolist() == [602, 4]
    with pytest.warns(UserWarning, match="truncated to 64 tokens"):
        encoded = tokenize_texts([long_text, "B cell"], tokenizer, max_length=64)
    assert encoded["input_ids"].shape == (2, 64)
    assert encoded["input_ids"][0, -1].item() == 3 and encoded["attention_mask"].sum().item() == 68
    assert encoded["input_ids"][1, :4].tolist() == [2, tokenizer.convert_tokens_to_ids("b"),
                                                    tokenizer.convert_tokens_to_ids("cell"), 3]


def test_vocab_script_reproduces_bundled_vocab(repo_root):
    spec = importlib.util.spec_from_file_location(
        "build_text_vocab", repo_root / "scripts" / "build_text_vocab.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    from lightning_langcell.text import Ontology
    vocab = script.train_vocab(script.ontology_corpus(Ontology.bundled()), 8000)
    bundled = (bundled_vocab_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    fixed = len(TEXT_SPECIAL_TOKENS) + len(script.ALPHABET)  # special tokens, then the alphabet
    assert len(vocab) == len(bundled) == 8000 and vocab[:fixed] == bundled[:fixed]
    assert bundled[len(TEXT_SPECIAL_TOKENS):] == sorted(bundled[len(TEXT_SPECIAL_TOKENS):], key=script.canonical_key)
    # The trainer breaks ties between equally frequent merges in hash order (random per process):
    # a rebuild may swap a few pieces (8 of 8,000 seen); a changed corpus or setting changes hundreds.
    assert len(set(vocab) ^ set(bundled)) <= 20
