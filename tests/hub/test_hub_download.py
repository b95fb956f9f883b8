"""Hub downloads and uploads, against a local fake of the Hub (never the network).

``fake_hub`` replaces ``huggingface_hub.snapshot_download`` with a function that copies the files
matching ``allow_patterns`` out of local "remote" folders into a cache snapshot, and records every
call; ``HF_HUB_OFFLINE`` is unset inside those tests so that a real download would be attempted.
"""

import fnmatch
import json
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError

from lightning_langcell.cli import main
from lightning_langcell.errors import CheckpointError
from lightning_langcell.hub import load_model, save_pretrained
from lightning_langcell.hub.download import download_checkpoint, parse_hub_id
from lightning_langcell.hub.push import UPLOAD_PATTERNS, push_to_hub
from lightning_langcell.hub.registry import pretrained_command, resolve_pretrained, sha256_file

GENEFORMER = "ctheodoris/Geneformer"
SUBFOLDER = "gf-12L-30M-i2048"
BIOMEDBERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext"


class FakeHub:
    """Remote repositories as local folders; ``snapshot_download`` copies what is asked for."""

    def __init__(self, cache: Path):
        self.cache, self.repos, self.calls = cache, {}, []

    def add(self, repo_id: str, source: Path, subfolder: str | None = None, extra=("training_args.bin",)):
        remote = self.repos.setdefault(repo_id, {})
        for path in source.rglob("*"):
            if path.is_file():
                relative = path.relative_to(source).as_posix()
                remote[f"{subfolder}/{relative}" if subfolder else relative] = path
        for name in extra:  # files the loader never needs: must not be downloaded
            remote[f"{subfolder}/{name}" if subfolder else name] = source / "config.json"

    def snapshot_download(self, repo_id, *, revision=None, cache_dir=None, allow_patterns=None,
                          local_files_only=False, **_):
        self.calls.append({"repo_id": repo_id, "revision": revision, "allow_patterns": list(allow_patterns or []),
                           "local_files_only": local_files_only})
        root = self.cache / repo_id.replace("/", "--") / (revision or "main")
        if local_files_only and root.is_dir():
            return str(root)
        if local_files_only or repo_id not in self.repos:
            raise LocalEntryNotFoundError("not in the fake cache")
        for name, source in self.repos[repo_id].items():
            if any(fnmatch.fnmatch(name, pattern) for pattern in allow_patterns):
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, root / name)
        root.mkdir(parents=True, exist_ok=True)
        return str(root)

    def downloaded(self) -> set[str]:
        return {p.relative_to(self.cache).as_posix().split("/", 2)[2] for p in self.cache.rglob("*") if p.is_file()}


@pytest.fixture()
def fake_hub(monkeypatch, tmp_path):
    hub = FakeHub(tmp_path / "fake_hub_cache")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return hub


def assert_same_cell_encoder(model, reference, outputs_of):
    """The loaded parts (cell encoder, MGM head) and cell states agree; the rest starts fresh."""
    for prefix in ("cell_bert.", "mgm_head."):
        for key, value in reference.state_dict().items():
            if key.startswith(prefix):
                assert torch.equal(model.state_dict()[key], value), key
    assert torch.equal(outputs_of(model)["cell_hidden"], outputs_of(reference)["cell_hidden"])


@pytest.fixture()
def ours_dir(tiny_model, tmp_path) -> Path:
    return save_pretrained(tiny_model, tmp_path / "ours")


def test_hub_ids_parse_with_subfolder_and_revision():
    ref = parse_hub_id(f"hf://{GENEFORMER}/{SUBFOLDER}@v1.0")
    assert (ref.repo_id, ref.subfolder, ref.revision) == (GENEFORMER, SUBFOLDER, "v1.0")
    assert parse_hub_id("hf://me/model", revision="abc").revision == "abc"
    assert str(ref) == f"hf://{GENEFORMER}/{SUBFOLDER}@v1.0"
    with pytest.raises(ValueError, match="not a hub id"):
        parse_hub_id("hf://justone")


def test_geneformer_hub_id_downloads_only_the_subfolders_needed_files(fake_hub, geneformer_dir, outputs_of):
    fake_hub.add(GENEFORMER, geneformer_dir, SUBFOLDER)
    fake_hub.add(GENEFORMER, geneformer_dir, "gf-6L-30M-i2048")
    model = load_model(f"hf://{GENEFORMER}/{SUBFOLDER}@abc123")
    assert [call["repo_id"] for call in fake_hub.calls] == [GENEFORMER] * 3
    assert {call["revision"] for call in fake_hub.calls} == {"abc123"}
    assert fake_hub.calls[0]["allow_patterns"] == [f"{SUBFOLDER}/config.json", f"{SUBFOLDER}/cell_bert/config.json"]
    second = fake_hub.calls[1]["allow_patterns"]
    assert second[:2] == [f"{SUBFOLDER}/config.json", f"{SUBFOLDER}/model.safetensors"]
    assert all(pattern.startswith(f"{SUBFOLDER}/") for pattern in second)
    # no safetensors in this repository: only then the pickle alternative is asked for
    assert fake_hub.calls[2]["allow_patterns"] == [f"{SUBFOLDER}/pytorch_model.bin"]
    assert fake_hub.downloaded() == {f"{SUBFOLDER}/config.json", f"{SUBFOLDER}/pytorch_model.bin"}
    assert_same_cell_encoder(model, load_model(geneformer_dir), outputs_of)


def test_registered_name_downloads_with_download_true(fake_hub, geneformer_dir, outputs_of):
    fake_hub.add(GENEFORMER, geneformer_dir, SUBFOLDER)
    model = load_model("geneformer-12l-30m", download=True)
    downloads = [call for call in fake_hub.calls if not call["local_files_only"]]
    assert {(c["repo_id"], c["revision"]) for c in downloads} == {(GENEFORMER, None)}
    assert downloads[0]["allow_patterns"] == [f"{SUBFOLDER}/config.json", f"{SUBFOLDER}/pytorch_model.bin"]
    assert_same_cell_encoder(model, load_model(geneformer_dir), outputs_of)
    # now it is in the cache: resolving it again downloads nothing
    calls = len(fake_hub.calls)
    assert resolve_pretrained("geneformer-12l-30m", download=True).is_dir()
    assert all(call["local_files_only"] for call in fake_hub.calls[calls:])


def test_nothing_is_downloaded_unless_asked(fake_hub, geneformer_dir, capsys):
    fake_hub.add(GENEFORMER, geneformer_dir, SUBFOLDER)
    with pytest.raises(CheckpointError, match="nothing is downloaded") as error:
        load_model("geneformer-12l-30m")
    assert "download=True" in error.value.fix and "pretrained geneformer-12l-30m --download" in error.value.fix
    with pytest.raises(CheckpointError, match="hf://ctheodoris/Geneformer"):
        load_model(f"{GENEFORMER}/{SUBFOLDER}")  # a plain path-like name is never taken for a hub id
    report = main(["pretrained", "geneformer-12l-30m"])
    assert "not found here" in report and "--download" in report
    main(["pretrained"])
    assert [call for call in fake_hub.calls if not call["local_files_only"]] == []


def test_biomedbert_hub_id_as_text_source_and_tokenizer(fake_hub, geneformer_dir, tiny_bert_dir):
    fake_hub.add(BIOMEDBERT, tiny_bert_dir)
    hub_id = f"hf://{BIOMEDBERT}"
    model = load_model(geneformer_dir, text_source=hub_id, text_tokenizer=hub_id)
    direct = load_model(geneformer_dir, text_source=tiny_bert_dir, text_tokenizer=tiny_bert_dir)
    assert {call["repo_id"] for call in fake_hub.calls} == {BIOMEDBERT}
    assert {"config.json", "model.safetensors", "vocab.txt"} <= fake_hub.downloaded()
    assert "training_args.bin" not in fake_hub.downloaded()
    for key, value in direct.text_bert.state_dict().items():
        if "crossattention" not in key:  # fresh in both
            assert torch.equal(model.text_bert.state_dict()[key], value), key
    assert model.config.text.vocab_size == direct.config.text.vocab_size


def test_our_format_round_trips_through_the_fake_hub(fake_hub, ours_dir, outputs_of, same_outputs):
    fake_hub.add("me/langcell-tiny", ours_dir, extra=("optimizer.pt",))
    model = load_model("hf://me/langcell-tiny")
    same_outputs(outputs_of(model), outputs_of(load_model(ours_dir)))
    expected = {p.relative_to(ours_dir).as_posix() for p in ours_dir.rglob("*") if p.is_file()}
    assert fake_hub.downloaded() == expected  # optimizer.pt stayed on the hub


def test_offline_error_names_the_files_and_where_to_put_them(monkeypatch, isolated_home, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the real snapshot_download, cache only
    with pytest.raises(CheckpointError) as error:
        load_model("geneformer-12l-30m", download=True)
    message = str(error.value)
    assert "HF_HUB_OFFLINE is set" in message
    assert f"'{SUBFOLDER}/config.json', '{SUBFOLDER}/pytorch_model.bin|{SUBFOLDER}/model.safetensors'" in message
    assert f"hf download {GENEFORMER} {SUBFOLDER}/config.json {SUBFOLDER}/pytorch_model.bin " in message
    assert str(isolated_home / "geneformer-12l-30m") in message
    with pytest.raises(CheckpointError, match="pass the folder <folder>/sub instead of the hub id"):
        download_checkpoint("hf://me/model/sub")


def test_failed_download_names_the_files(fake_hub):
    with pytest.raises(CheckpointError, match="the download failed") as error:
        download_checkpoint("hf://me/absent@v2")
    assert "['config.json', 'model.safetensors|pytorch_model.bin']" in error.value.problem
    assert "hf download me/absent config.json model.safetensors --revision v2" in error.value.fix


def test_recorded_sizes_and_checksums_are_checked_and_reported(tmp_path, monkeypatch, isolated_home):
    folder = isolated_home / "mine"
    folder.mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"12345")
    (folder / "b.bin").write_bytes(b"xyz")
    entry = {"kind": "langcell", "layout": "ours", "purpose": "test", "source": "a drive folder", "licence": "MIT",
             "files": {"a.bin": sha256_file(folder / "a.bin"), "b.bin": None}, "sizes": {"a.bin": 5}}
    (tmp_path / "extra.json").write_text(json.dumps({"models": {"mine": entry}}))
    monkeypatch.setenv("LANGCELL_REGISTRY", str(tmp_path / "extra.json"))
    result = pretrained_command("mine")
    assert result["verification"] == ("verified: 1 files match the sha256 recorded in the registry; "
                                      "not verified: ['b.bin'] (no recorded checksums)")
    (folder / "a.bin").write_bytes(b"1234")
    with pytest.raises(CheckpointError, match="has 4 bytes, but the registry entry 'mine' expects 5"):
        pretrained_command("mine")


def test_prefilled_cache_loads_a_hub_id_offline(monkeypatch, ours_dir, tmp_path, outputs_of, same_outputs):
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = tmp_path / "hf_cache" / "models--me--tiny"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    shutil.copytree(ours_dir, root / "snapshots" / commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert download_checkpoint("hf://me/tiny") == root / "snapshots" / commit
    same_outputs(outputs_of(load_model("hf://me/tiny")), outputs_of(load_model(ours_dir)))


class FakeApi:
    calls: list = []

    def __init__(self, token=None):
        FakeApi.calls.append(("init", token))

    def create_repo(self, repo_id, **kwargs):
        FakeApi.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        FakeApi.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        FakeApi.calls.append(("upload_folder", kwargs))
        return type("Commit", (), {"commit_url": "https://huggingface.co/me/x/commit/1"})()


@pytest.fixture()
def fake_api(monkeypatch):
    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return FakeApi


def test_push_uploads_our_folders_files(fake_api, ours_dir):
    (ours_dir / "notes.tmp").write_text("not part of the checkpoint")
    result = main(["push", str(ours_dir), "me/x", "--revision", "v1", "--commit-message", "first"])
    assert result["load_with"] == "load_model('hf://me/x@v1')"
    names = [call[0] for call in fake_api.calls]
    assert names == ["init", "create_repo", "create_branch", "upload_folder"]
    assert fake_api.calls[1][1:] == ("me/x", {"private": None, "exist_ok": True, "repo_type": "model"})
    upload = fake_api.calls[3][1]
    assert (upload["repo_id"], upload["revision"], upload["commit_message"]) == ("me/x", "v1", "first")
    folder = Path(upload["folder_path"])
    assert folder == ours_dir
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    sent = {name for name in present if any(fnmatch.fnmatch(name, pattern) for pattern in upload["allow_patterns"])}
    assert sent == present - {"notes.tmp"} and "model.safetensors" in sent and "text_tokenizer/tokenizer.json" in sent
    assert upload["allow_patterns"] == UPLOAD_PATTERNS


def test_push_refuses_a_folder_not_in_our_format(fake_api, geneformer_dir, ours_dir):
    with pytest.raises(CheckpointError, match="not a checkpoint in our format"):
        push_to_hub(str(geneformer_dir), "me/x")
    (ours_dir / "model.safetensors").write_bytes(b"corrupted")
    with pytest.raises(CheckpointError, match="sha256"):
        push_to_hub(str(ours_dir), "me/x")
    assert fake_api.calls == []


def test_pretrained_prints_the_drive_steps_then_says_it_cannot_verify(official_dir, isolated_home, fake_hub):
    steps = main(["pretrained", "langcell"])
    assert "https://drive.google.com/drive/folders/1cuhVG9v0YoAnjW-t_WMpQQguajumCBTp" in steps
    assert f"Put them in {isolated_home / 'langcell'}/" in steps
    assert "cell_bert/pytorch_model.bin  (or cell_bert/model.safetensors)" in steps and "ctm_head.bin" in steps
    with pytest.raises(CheckpointError, match="cannot be downloaded automatically"):
        pretrained_command("langcell", download=True)
    shutil.copytree(official_dir, isolated_home / "langcell", ignore=shutil.ignore_patterns("inputs", "expected"))
    report = main(["pretrained", "langcell"])
    assert f"found at {isolated_home / 'langcell'}" in report
    assert "not verified: no recorded checksums" in report and "verified: " not in report.replace("not verified", "")
    size = (isolated_home / "langcell" / "ctm_head.bin").stat().st_size
    assert f"ctm_head.bin ({size} bytes)" in report
    assert fake_hub.calls == []


def test_pretrained_says_verified_only_with_recorded_checksums(repo_root):
    result = pretrained_command("langcell-tiny-bundled")
    assert result["verification"] == "verified: 5 files match the sha256 recorded in the registry"
