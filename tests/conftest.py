"""Every test runs offline (the Hugging Face libraries are told so; `no_network` refuses sockets), and
`finished_sweep`, the tiny sweep that the sweep, report and notebook tests share."""

import socket
from pathlib import Path

import pytest

from actsweep.study import runner
from helpers import write_sweep, write_tiny_base


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # subprocesses inherit it
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("this test must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory) -> Path:
    """The folder of a finished tiny sweep, trained once per session: ReLU and GELU × 2 seeds, plus one
    absurd learning rate that must diverge (6 runs, 2 at a time); returns <root>/tiny."""
    folder = tmp_path_factory.getbasetemp() / "shared_sweep"
    sweep_file = write_sweep(folder / "sweep.yaml", write_tiny_base(folder))
    assert runner.main([str(sweep_file), "--root", str(folder / "runs"), "--jobs", "2"]) == 0
    return folder / "runs" / "tiny"
