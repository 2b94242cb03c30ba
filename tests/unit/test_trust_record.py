"""Where the user's record of written files is, and what stands in its place (trust.py); the
records' checks on real runs are in tests/faults/test_written_record.py."""

from __future__ import annotations

import pytest

from mlops_nb import artifacts
from mlops_nb.artifacts import trust
from mlops_nb.errors import ArtifactError


@pytest.mark.parametrize("relative", ["cache", "./a b/'q'\nc"])
def test_a_relative_cache_folder_is_ignored(monkeypatch, tmp_path, relative):
    """A relative folder would be another record in every workspace: XDG's rule, ignored."""
    monkeypatch.setenv(trust.CACHE_ENV, relative)
    monkeypatch.setenv("XDG_CACHE_HOME", relative)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert trust.user_record() == tmp_path / "home" / ".cache" / "mlops_nb" / "written"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert trust.user_record() == tmp_path / "xdg" / "mlops_nb" / "written"
    monkeypatch.setenv(trust.CACHE_ENV, str(tmp_path / "mine"))
    assert trust.user_record() == tmp_path / "mine" / "written"


def test_a_file_in_place_of_the_cache_folder_is_refused_and_nothing_is_saved(monkeypatch,
                                                                            tmp_path):
    home = tmp_path / "cache"
    home.write_text("not a folder\n")
    monkeypatch.setenv(trust.CACHE_ENV, str(home))
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "params.yaml").write_text("{}\n")
    with pytest.raises(ArtifactError, match=f"{home} is a symlink or not a folder"):
        artifacts.save({1, 2}, tmp_path / "proj" / "outputs" / "s" / "x")
    assert list((tmp_path / "proj" / "outputs" / "s").iterdir()) == []
    with pytest.raises(ArtifactError, match="not a folder"):
        trust.written(tmp_path / "proj", "sha256-" + "0" * 64)


def test_an_entry_is_keyed_by_a_digest_only(tmp_path):
    for bad in ("../x", "sha256-" + "0" * 64 + "/..", "sha256-XYZ", "", "a" * 300):
        with pytest.raises(ValueError, match="not a digest"):
            trust.record(tmp_path, bad)
