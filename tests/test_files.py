"""kolors.files and kolors.signals: whole or nothing, never touching what the writer did not create."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from kolors.errors import KolorsError
from kolors.files import atomic_file, staging_folder, write_text
from kolors.signals import ExitSignals, Terminated, deferred, exit_status, import_whole


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt(), Terminated()])
def test_a_failed_file_write_leaves_the_old_content_and_no_temporary(tmp_path, failure):
    target = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(type(failure)), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise failure
    assert target.read_text() == "old" and listing(tmp_path) == ["a.txt"]


def test_atomic_file_keeps_an_existing_file_when_asked(tmp_path):
    write_text(tmp_path / "a.txt", "mine")
    with pytest.raises(FileExistsError), atomic_file(tmp_path / "a.txt", overwrite=False) as tmp:
        tmp.write_text("new")
    assert (tmp_path / "a.txt").read_text() == "mine" and listing(tmp_path) == ["a.txt"]


def test_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(KolorsError, match="does not exist"):
        write_text(tmp_path / "no" / "a.txt", "x")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("failure", [RuntimeError("boom"), KeyboardInterrupt(), Terminated()])
def test_a_failed_folder_removes_only_what_it_made(tmp_path, failure):
    (tmp_path / "keep.txt").write_text("mine")
    (tmp_path / "out.converting").mkdir()  # somebody's folder with the name an old version used
    (tmp_path / "out.converting" / "theirs").write_text("x")
    with pytest.raises(type(failure)), staging_folder(tmp_path / "new" / "deeper" / "out") as tmp:
        (tmp / "half.png").write_text("x")
        raise failure
    assert listing(tmp_path) == ["keep.txt", "out.converting", "out.converting/theirs"]


def test_a_folder_appears_whole_and_replaces_only_with_consent(tmp_path):
    with staging_folder(tmp_path / "out") as tmp:
        (tmp / "a").write_text("1")
        assert not (tmp_path / "out").exists()
    assert listing(tmp_path) == ["out", "out/a"]
    with pytest.raises(KolorsError, match="not empty|exists"), staging_folder(tmp_path / "out") as tmp:
        (tmp / "b").write_text("2")
    assert listing(tmp_path) == ["out", "out/a"]

    def refuse(folder):
        raise KolorsError(f"{folder} is not mine")

    with pytest.raises(KolorsError, match="not mine"), staging_folder(tmp_path / "out", replace=refuse) as tmp:
        (tmp / "b").write_text("2")
    assert listing(tmp_path) == ["out", "out/a"]
    with staging_folder(tmp_path / "out", replace=lambda folder: None) as tmp:
        (tmp / "b").write_text("2")
    assert listing(tmp_path) == ["out", "out/b"]


def test_a_signal_inside_a_deferred_section_waits_for_its_end():
    handler = ExitSignals()
    done = []
    with handler.installed(), pytest.raises(Terminated):
        with deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("section finished")
    assert done == ["section finished"]
    assert exit_status(Terminated()) == 143 and exit_status(KeyboardInterrupt()) == 130
    assert signal.getsignal(signal.SIGTERM) is not handler  # put back


def test_a_signal_while_a_library_imports_is_raised_once_it_is_complete(tmp_path, monkeypatch):
    """A library cut in half by Ctrl-C can swallow the interrupt and stay broken (numpy did, inside torch's import)."""
    (tmp_path / "slow_library.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGINT)\nREADY = True\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    with ExitSignals().installed(), pytest.raises(KeyboardInterrupt):
        import_whole("slow_library")
    assert sys.modules["slow_library"].READY  # imported whole, then interrupted
    del sys.modules["slow_library"]


def test_an_evaluation_tool_interrupted_says_so_in_one_line(tmp_path):
    """`python -m kolors.evaluation.word_probe` stopped by a real SIGINT / SIGTERM: one line, 130 / 143, no report."""
    import signal
    import subprocess
    import sys
    import time

    for signum, status, word in ((signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")):
        report = tmp_path / "probe.json"
        proc = subprocess.Popen([sys.executable, "-m", "kolors.evaluation.word_probe", "--scenes", "512",
                                 "--json", str(report)], stderr=subprocess.PIPE, text=True)
        time.sleep(12)  # past the imports (the handler is installed once the module has loaded), mid-probe
        proc.send_signal(signum)
        err = proc.communicate(timeout=60)[1].strip().splitlines()
        assert proc.returncode == status, err[-5:]
        assert err[-1] == f"python -m kolors.evaluation.word_probe: error: {word}" and "Traceback" not in "\n".join(err)
        assert not report.exists()
