"""``kolors serve``'s own mistakes: one line, exit status 2, before any model is loaded."""

from __future__ import annotations

import socket

import pytest

from kolors.cli.main import main


@pytest.mark.parametrize(("args", "message"), [
    (["--lora-dir", "/nonexistent-loras"], "--lora-dir /nonexistent-loras is not a folder"),
    (["--database", "mysql://x/y"], "--database must be a postgresql:// (or sqlite:///) URL, got mysql:…"),
    (["--workers", "many"], "--workers must be auto or a positive number, got many"),
    (["--port", "70000"], "--port must be between 1 and 65535, got 70000"),
    (["--max-queue", "0"], "--max-queue: must be a positive integer, got 0"),
    (["--host", "no-such-host.invalid"], "--host no-such-host.invalid is not an address of this machine"),
])
def test_bad_options_are_one_line(capsys, args, message):
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("kolors: error:") and err.count("\n") == 1


def test_a_taken_port_is_one_line(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--data-dir", "/tmp/kolors-unused"]) == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in capsys.readouterr().err
