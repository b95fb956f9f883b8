"""Fixtures of the checkpoint tests: the official-layout fixture, a random tiny model, an isolated
checkpoint cache (``LANGCELL_HOME``, HF cache, no extra registry) and exact-output helpers."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

OFFICIAL = "langcell-official-tiny"


@pytest.fixture()
def official_dir(test_data_dir) -> Path:
    return test_data_dir / OFFICIAL


@pytest.fixture()
def official_copy(official_dir, tmp_path) -> Path:
    """A writable copy of the official-layout fixture."""
    target = tmp_path / "official"
    shutil.copytree(official_dir, target)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


@pytest.fixture(autouse=True)
def isolated_home(monkeypatch, tmp_path):
    """Every test gets an empty checkpoint cache and HF cache, only the bundled registry, and one
    torch thread (the models are tiny; more threads only contend on a busy machine)."""
    home = tmp_path / "langcell_home"
    monkeypatch.setenv("LANGCELL_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.delenv("LANGCELL_REGISTRY", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield home
    torch.set_num_threads(threads)


@pytest.fixture()
def inputs(official_dir) -> dict[str, torch.Tensor]:
    """The official fixture's inputs as int64 tensors: its first 3 cells (31, 76, 141 tokens, padded
    to 141; enough to cover padding, kept small for speed) and its 4 class texts."""
    arrays = {name: torch.from_numpy(np.load(official_dir / "inputs" / f"{name}.npy"))
              for name in ("cell_input_ids", "cell_attention_mask", "text_input_ids", "text_attention_mask")}
    for name in ("cell_input_ids", "cell_attention_mask"):
        arrays[name] = arrays[name][:3, :141]
    return arrays


def model_outputs(model, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cell and text embeddings and the matching logits of text 0 with every cell (eval, no grad)."""
    cells, mask = inputs["cell_input_ids"], inputs["cell_attention_mask"]
    texts, text_mask = inputs["text_input_ids"], inputs["text_attention_mask"]
    model.eval()
    with torch.no_grad():
        hidden, cell_embedding = model.encode_cells(cells, mask)
        _, text_embedding = model.encode_texts(texts, text_mask)
        repeated = texts[:1].expand(cells.shape[0], -1), text_mask[:1].expand(cells.shape[0], -1)
        match = model.match_logits(*repeated, hidden, mask)
    return {"cell_hidden": hidden, "cell_embedding": cell_embedding, "text_embedding": text_embedding, "match": match}


def assert_same_outputs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture()
def outputs_of(inputs):
    """``outputs_of(model)``: :func:`model_outputs` on the official fixture's inputs."""
    return lambda model: model_outputs(model, inputs)


@pytest.fixture()
def same_outputs():
    return assert_same_outputs


@pytest.fixture()
def make_tiny(randomise):
    """``make_tiny(**overrides)``: a random tiny LangCellModel (eval) whose text vocabulary fits the
    bundled text tokenizer; ``<cls>`` pooling unless overridden (the official layout needs it)."""
    from lightning_langcell.models import LangCellConfig, LangCellModel
    from lightning_langcell.text import load_text_tokenizer

    def make(cell=None, text=None, **overrides):
        overrides.setdefault("cell_pooling", "cls")
        cell = {"hidden_size": 32, "max_position_embeddings": 512, **(cell or {})}
        text = {"vocab_size": len(load_text_tokenizer()), "hidden_size": 48, **(text or {})}
        config = LangCellConfig.preset("tiny", cell=cell, text=text, **overrides)
        model = LangCellModel(config)
        randomise(model)
        return model.eval()

    return make


@pytest.fixture()
def tiny_model(make_tiny):
    return make_tiny()


GENEFORMER_SHAPE = dict(vocab_size=25426, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, hidden_act="relu", max_position_embeddings=512,
                        hidden_dropout_prob=0.02, attention_probs_dropout_prob=0.02)


@pytest.fixture(scope="session")
def geneformer_dir(tmp_path_factory, randomise) -> Path:
    """A tiny random Geneformer-30M-style folder as the 2021 release stores it: ``BertForMaskedLM``
    state dict in ``pytorch_model.bin`` (``bert.`` prefix, ``cls.predictions.*`` with the tied
    decoder weight and its bias, a ``position_ids`` buffer), 25,426 tokens (no ``<cls>``)."""
    from transformers import BertConfig, BertForMaskedLM

    folder = tmp_path_factory.mktemp("geneformer")
    config = BertConfig(**GENEFORMER_SHAPE)
    model = BertForMaskedLM(config)
    randomise(model, seed=1)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"].clone()
    state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"].clone()
    state["bert.embeddings.position_ids"] = torch.arange(512)[None]
    torch.save(state, folder / "pytorch_model.bin")
    data = {**config.to_dict(), "architectures": ["BertForMaskedLM"], "model_type": "bert"}
    (folder / "config.json").write_text(json.dumps(data))
    return folder


TINY_BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(c) for c in range(97, 123)] + [
    "cell", "type", "monocyte", "natural", "killer", "dendritic", "##s", "lymphocyte", "##cyte", "blood"]


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, randomise) -> Path:
    """A tiny random HF ``BertModel`` folder (a text encoder, e.g. a stand-in for BiomedBERT/MiniLM)
    with its ``vocab.txt``."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    model = BertModel(BertConfig(vocab_size=len(TINY_BERT_VOCAB), hidden_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=64, max_position_embeddings=128))
    randomise(model, seed=2)
    model.save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(TINY_BERT_VOCAB) + "\n")
    return folder
