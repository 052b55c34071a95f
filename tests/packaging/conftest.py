"""The packaging check's two expensive steps (see wren_testing.packaging), each done once per test run."""

import json

import pytest
from filelock import FileLock

from wren_testing.packaging import build_distributions, install_wheel


def _once(name: str, tmp_path_factory, worker_id: str, produce) -> dict:
    """`produce(folder) -> dict` (JSON-serialisable) once per run; xdist workers reuse the first one's result."""
    if worker_id == "master":
        return produce(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent  # one folder per run, common to all workers
    folder, record, failure = shared / name, shared / f"{name}.json", shared / f"{name}.failed"
    with FileLock(str(shared / f"{name}.lock")):
        if failure.exists():
            pytest.fail(f"{name} failed in another worker:\n{failure.read_text()}")
        if not record.exists():
            folder.mkdir()
            try:
                record.write_text(json.dumps(produce(folder)))
            except BaseException as error:  # pytest's assertion outcomes are BaseExceptions
                failure.write_text(f"{type(error).__name__}: {error}")
                raise
    return json.loads(record.read_text())


@pytest.fixture(scope="session")
def distributions(tmp_path_factory, worker_id) -> dict:
    return _once("distributions", tmp_path_factory, worker_id, build_distributions)


@pytest.fixture(scope="session")
def installed_wheel(tmp_path_factory, worker_id, distributions) -> dict:
    return _once(
        "installed-wheel", tmp_path_factory, worker_id, lambda folder: install_wheel(folder, distributions["wheel"])
    )
