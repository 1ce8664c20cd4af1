"""Held-out pairs copy users' queries: only the owner and the trainer's group may read them; the model
files the search API loads stay readable by everyone."""

import os

import pytest

from eduranker.pipeline.artifacts import (
    HELDOUT_PAIRS,
    NO_TIME,
    read_heldout_pairs,
    staged_version_dir,
    write_heldout_pairs,
)
from eduranker.pipeline.pairs import Pair

PAIRS = [Pair("i", "q", "r", "a private query", "doc", 1.0, NO_TIME)]


def _publish(tmp_path, **kwargs):
    models = tmp_path / "models"
    models.mkdir()
    with staged_version_dir(models, "v0001", **kwargs) as folder:
        (folder / "model.safetensors").write_bytes(b"weights")
        write_heldout_pairs(folder, PAIRS)
    return models / "versions" / "v0001"


def test_heldout_texts_are_0640_in_the_models_folders_group_and_model_files_stay_readable(tmp_path):
    version = _publish(tmp_path)
    heldout = version / HELDOUT_PAIRS
    assert heldout.stat().st_mode & 0o777 == 0o640
    assert heldout.stat().st_gid == (tmp_path / "models").stat().st_gid
    assert (version / "model.safetensors").stat().st_mode & 0o004  # the search API reads the model
    assert read_heldout_pairs(version)[0].query == "a private query"  # the trainer still reads them


def test_models_gid_names_the_group_that_may_read_them(tmp_path):
    folder_gid = tmp_path.stat().st_gid
    # A group other than the folder's that this process may give files (root may give any).
    others = [12345] if os.geteuid() == 0 else [g for g in os.getgroups() if g != folder_gid]
    if not others:
        pytest.skip("this user belongs to no second group")
    gid = others[0]
    heldout = _publish(tmp_path, private_gid=gid) / HELDOUT_PAIRS
    assert heldout.stat().st_gid == gid and heldout.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
def test_heldout_texts_are_0640_from_their_first_byte_to_their_publication(tmp_path, monkeypatch, umask):
    """Seen before the first pair is written and after every mode change of the publication: never
    readable by others, whatever the umask."""
    from pathlib import Path

    seen = []
    watched = []

    def pairs_watching(folder):
        watched.append(folder / HELDOUT_PAIRS)
        seen.append(watched[0].stat().st_mode & 0o777)  # the file exists, still empty
        yield from PAIRS

    real_chmod = Path.chmod

    def chmod_watching(self, mode, **kwargs):
        real_chmod(self, mode, **kwargs)
        if watched and watched[0].exists():
            seen.append(watched[0].stat().st_mode & 0o777)

    monkeypatch.setattr(Path, "chmod", chmod_watching)
    models = tmp_path / "models"
    models.mkdir()
    previous = os.umask(umask)
    try:
        with staged_version_dir(models, "v0001") as folder:
            (folder / "config.json").write_text("{}")
            write_heldout_pairs(folder, pairs_watching(folder))
    finally:
        os.umask(previous)
    assert len(seen) >= 2 and set(seen) == {0o640}, [oct(m) for m in seen]
    assert (models / "versions" / "v0001" / HELDOUT_PAIRS).stat().st_mode & 0o777 == 0o640
