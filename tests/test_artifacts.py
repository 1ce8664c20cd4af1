import os
import subprocess
import sys
import threading

import pytest

from eduranker.errors import UnknownVersion, VersionUnusable
from eduranker.models_dir import champion_target, check_loadable, point_champion, version_dir
from eduranker.pipeline.artifacts import ABANDONED_AFTER_S, staged_version_dir
from tests.fake_versions import write_loadable_files


def test_a_version_folder_appears_only_when_complete(tmp_path):
    seen_during_write = []
    with staged_version_dir(tmp_path, "v0001") as folder:
        (folder / "weights").write_text("w")
        seen_during_write.append(version_dir(tmp_path, "v0001").exists())
    assert seen_during_write == [False]
    assert (version_dir(tmp_path, "v0001") / "weights").read_text() == "w"
    assert list((tmp_path / ".staging").iterdir()) == []


def test_a_failed_write_leaves_no_version_folder(tmp_path):
    with pytest.raises(RuntimeError), staged_version_dir(tmp_path, "v0002") as folder:
        (folder / "half").write_text("x")
        raise RuntimeError("disk full")
    assert not version_dir(tmp_path, "v0002").exists()
    assert list((tmp_path / ".staging").iterdir()) == []


def test_staging_left_by_a_killed_worker_is_removed_by_the_next_write_once_abandoned(tmp_path):
    old, recent = tmp_path / ".staging" / "v0001-dead", tmp_path / ".staging" / "v0002-live"
    for folder in (old, recent):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_text("half")
    long_ago = old.stat().st_mtime - ABANDONED_AFTER_S - 60
    os.utime(old, (long_ago, long_ago))
    with staged_version_dir(tmp_path, "v0003") as folder:
        (folder / "weights").write_text("w")
    assert not old.exists()
    assert recent.exists()  # possibly another worker writing right now
    assert version_dir(tmp_path, "v0003").exists()


@pytest.mark.parametrize("name", ["../etc", "v0001/../../x", "/abs", "v1", "champion", "v0001 "])
def test_version_names_cannot_escape_the_models_dir(tmp_path, name):
    with pytest.raises(UnknownVersion):
        version_dir(tmp_path, name)


def test_champion_pointer_switches_and_never_disappears(tmp_path):
    for v in ("v0001", "v0002"):
        with staged_version_dir(tmp_path, v) as folder:
            (folder / "name").write_text(v)
    point_champion(tmp_path, "v0001")
    link = tmp_path / "champion"
    missing = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            if not os.path.exists(link / "name"):
                missing.append(1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    for i in range(300):
        point_champion(tmp_path, "v0002" if i % 2 == 0 else "v0001")
    stop.set()
    watcher.join()
    assert missing == []
    assert champion_target(tmp_path) == "v0001"
    assert (link / "name").read_text() == "v0001"


def test_champion_pointer_refuses_a_version_without_artifacts(tmp_path):
    with pytest.raises(UnknownVersion):
        point_champion(tmp_path, "v0009")


def test_worker_package_import_does_not_load_torch():
    """The Celery parent imports worker and its tasks; torch (and CUDA) must wait for a job."""
    code = "import sys, worker, worker.tasks; print('torch' in sys.modules, 'sentence_transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_a_version_is_readable_by_the_search_api_under_the_operators_umask(tmp_path, umask, file_mode, dir_mode):
    previous = os.umask(umask)
    try:
        with staged_version_dir(tmp_path, "v0001") as folder:
            private = folder / "model.safetensors"
            private.write_text("weights")
            private.chmod(0o600)  # what safetensors leaves behind
            (folder / "sub").mkdir()
            (folder / "sub" / "x").write_text("x")
    finally:
        os.umask(previous)
    final = version_dir(tmp_path, "v0001")
    assert final.stat().st_mode & 0o777 == dir_mode
    assert (final / "sub").stat().st_mode & 0o777 == dir_mode
    for path in (final / "model.safetensors", final / "sub" / "x"):
        assert path.stat().st_mode & 0o777 == file_mode


def _fake_version(root, version, *, weights=None, tokenizer=True):
    folder = root / "versions" / version
    folder.mkdir(parents=True)
    write_loadable_files(folder)
    if weights is not None:
        (folder / "model.safetensors").write_bytes(weights)
    if not tokenizer:
        (folder / "tokenizer.json").unlink()
    return folder


def test_check_loadable_accepts_a_whole_version_and_names_what_is_wrong_with_a_broken_one(tmp_path):
    _fake_version(tmp_path, "v0001")
    assert check_loadable(tmp_path, "v0001")
    _fake_version(tmp_path, "v0002", weights=b"garbage!")
    _fake_version(tmp_path, "v0003", tokenizer=False)
    with pytest.raises(VersionUnusable, match="do not load"):
        check_loadable(tmp_path, "v0002")
    with pytest.raises(VersionUnusable, match="no tokenizer"):
        check_loadable(tmp_path, "v0003")
    with pytest.raises(VersionUnusable, match="no artifacts"):
        check_loadable(tmp_path, "v0004")
