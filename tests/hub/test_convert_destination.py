"""``convert SRC DST``: what DST may be. Only a checkpoint folder this tool writes is replaced (with
--overwrite); any other folder, the current folder, the source and folders around it are refused
with a problem and a fix, and nothing is touched or left half-written."""

from pathlib import Path

import pytest

from lightning_langcell.cli import main
from lightning_langcell.errors import CheckpointError
from lightning_langcell.hub.convert import convert_command
from lightning_langcell.hub.loading import load_model


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for folders)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def _refused(capsys, args: list[str]) -> list[str]:
    """Run the CLI expecting a refusal; its stderr lines."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.splitlines()


@pytest.fixture()
def ours(official_dir, tmp_path) -> Path:
    """A checkpoint folder in our format, written by convert."""
    return convert_command(str(official_dir), str(tmp_path / "ours"))


def test_overwrite_refuses_a_project_folder_and_keeps_its_files(official_dir, tmp_path, capsys):
    project = tmp_path / "my_project"
    (project / "src").mkdir(parents=True)
    (project / "train.py").write_text("print('my work')\n")
    (project / "src" / "notes.md").write_text("# notes\n")
    before = _tree(tmp_path)
    lines = _refused(capsys, [str(official_dir), str(project), "--overwrite"])
    assert lines[0] == (f"error: The destination {project} exists and is not a checkpoint folder this tool writes "
                        "(it holds ['src/', 'train.py'], which neither our format nor the official layout has); "
                        "it is never overwritten.")
    assert lines[1] == "fix: Choose another destination, or remove that folder yourself."
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("extra", ["train.py", "cell_bert/notes.txt", "gene_vocabulary/mine.json"])
def test_overwrite_refuses_a_checkpoint_folder_holding_other_files(official_dir, ours, tmp_path, capsys, extra):
    exported = convert_command(str(ours), str(tmp_path / "official"), to="official")
    for folder in (ours, exported):
        target = folder / extra
        target.parent.mkdir(exist_ok=True)
        target.write_text("mine\n")
        before = _tree(tmp_path)
        lines = _refused(capsys, [str(official_dir), str(folder), "--overwrite"])
        shown = "cell_bert/" if folder == ours and extra.startswith("cell_bert/") else extra  # no towers in ours
        assert f"(it holds ['{shown}']" in lines[0]
        assert _tree(tmp_path) == before
        target.unlink()


@pytest.mark.parametrize("to", ["ours", "official"])
def test_overwrite_replaces_a_folder_convert_wrote(official_dir, tmp_path, to, outputs_of, same_outputs):
    target = tmp_path / "converted"
    convert_command(str(official_dir), str(target), to="official" if to == "ours" else "ours")
    with pytest.raises(CheckpointError, match="exists"):
        convert_command(str(official_dir), str(target), to=to)
    assert main(["convert", str(official_dir), str(target), "--to", to, "--overwrite"]) == {
        "written": str(target), "format": to}
    assert (target / "config.json").is_file() == (to == "ours")
    assert (target / "cell_bert").is_dir() == (to == "official")
    same_outputs(outputs_of(load_model(official_dir)), outputs_of(load_model(target)))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_an_empty_folder_is_filled_without_overwrite(official_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    convert_command(str(official_dir), str(tmp_path / "empty"))
    assert (tmp_path / "empty" / "model.safetensors").is_file()


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_the_current_folder_and_its_parents_are_refused(official_dir, tmp_path, monkeypatch, capsys, overwrite):
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.txt").write_text("keep\n")
    monkeypatch.chdir(work)
    for dst in (".", str(work), ".."):
        before = _tree(tmp_path)
        lines = _refused(capsys, [str(official_dir), dst, *overwrite])
        assert lines[:2] == [
            f"error: The destination {dst} is the current folder or holds it; converting there would replace "
            "that folder.",
            "fix: Name a new folder for the converted checkpoint, e.g. `convert SRC my-model-ours`."]
        assert _tree(tmp_path) == before


def test_the_source_and_folders_around_it_are_refused(ours, tmp_path, capsys):
    before = _tree(tmp_path)
    for dst, phrase in ((ours, "is the source"), (tmp_path, "is the source"), (ours / "inner", "is inside the source")):
        lines = _refused(capsys, [str(ours), str(dst), "--to", "official", "--overwrite"])
        assert lines[0].startswith(f"error: The destination {dst} {phrase}"), lines
        assert lines[1].startswith("fix: Name a new folder")
    assert _tree(tmp_path) == before


def test_a_failed_conversion_leaves_the_old_folder_and_no_temporary_folder(official_dir, ours, tmp_path, monkeypatch):
    before = _tree(tmp_path)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("lightning_langcell.hub.pretrained.write_gene_vocabulary", fail)
    with pytest.raises(OSError, match="disk full"):
        convert_command(str(official_dir), str(ours), overwrite=True)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("kind", ["file", "link"])
def test_a_file_or_a_link_is_refused(official_dir, ours, tmp_path, capsys, kind):
    target = tmp_path / "dst"
    if kind == "file":
        target.write_text("mine\n")
    else:
        target.symlink_to(ours, target_is_directory=True)
    before = _tree(tmp_path)
    lines = _refused(capsys, [str(official_dir), str(target), "--overwrite"])
    assert lines[0] == (f"error: The destination {target} exists and is a file or a link, not a folder; "
                        "it is never overwritten.")
    assert _tree(tmp_path) == before
