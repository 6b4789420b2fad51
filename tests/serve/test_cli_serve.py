"""``fcnseg serve``: bad input is a one-line error with exit code 2, before any server starts."""

from __future__ import annotations

import socket

import pytest

from fcnseg.cli import main

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install '.[serve]'")
pytest.importorskip("httpx", reason="httpx is not installed: pip install '.[serve-test]'")


def test_missing_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    assert main(["serve", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fcnseg serve: error:") and "none.pt" in err[0]


def test_port_in_use_is_one_line_exit_2(checkpoint, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--checkpoint", checkpoint, "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"127.0.0.1:{port}" in err[0]


def test_bad_settings_are_exit_2(checkpoint, capsys):
    assert main(["serve", "--checkpoint", checkpoint, "--max-batch", "0"]) == 2
    assert "max_batch" in capsys.readouterr().err
