"""`kolors convert` never deletes or writes over what it did not write: every kind of destination.

The source and every unrelated file are compared byte for byte before and after each refused or finished call.
"""

from __future__ import annotations

import hashlib
import shutil

import pytest

from kolors.cli.main import main
from kolors.loading import EMBEDDED_MODEL_DIR
from kolors.loading.conversion import MARKER


def snapshot(folder):
    """{relative path: sha256} of every file under ``folder`` (symlinks by their target)."""
    return {str(p.relative_to(folder)): (f"-> {p.readlink()}" if p.is_symlink()
                                         else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink()}


@pytest.fixture
def world(tiny_kolors_diffusers, tmp_path):
    """tmp/models/src (a model folder) and tmp/user/notes.txt (somebody's file)."""
    shutil.copytree(tiny_kolors_diffusers, tmp_path / "models" / "src")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("mine")
    return tmp_path


def convert(capsys, *argv):
    code = main(["convert", *map(str, argv), "-q"])
    err = capsys.readouterr().err
    return code, err


def assert_refused(code, err, message):
    assert code == 2, err
    assert err.startswith("kolors: error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err, err


@pytest.mark.parametrize("destination, overwrite, message", [
    ("models/src", True, "must be a different folder"),
    ("models", True, "contains the source model folder"),
    (".", True, "contains the source model folder"),
    ("models/src/inside", False, "is inside the source model folder"),
    ("models/src/unet", True, "is inside the source model folder"),
    ("user", False, "already exists"),
    ("user", True, "is not one (no kolors_convert.json)"),
    ("user/notes.txt", True, "is a file"),
    ("user/notes.txt/sub", False, "is a file"),
    ("link-to-user", True, "is a symbolic link"),
    ("link-to-src", True, "must be a different folder"),
])
def test_refused_destinations_leave_everything_as_it_was(world, capsys, destination, overwrite, message):
    (world / "link-to-user").symlink_to(world / "user")
    (world / "link-to-src").symlink_to(world / "models" / "src")
    before = snapshot(world)
    code, err = convert(capsys, world / "models" / "src", world / destination, *(["--overwrite"] if overwrite else []))
    assert_refused(code, err, message)
    assert snapshot(world) == before
    assert sorted(p.name for p in world.iterdir()) == ["link-to-src", "link-to-user", "models", "user"]


def test_an_uncreatable_destination_is_one_line(world, capsys):
    code, err = convert(capsys, world / "models" / "src", "/proc/kolors-convert-test")
    assert_refused(code, err, "/proc/kolors-convert-test")


def test_overwrite_replaces_only_an_untouched_earlier_conversion(world, capsys):
    src, out = world / "models" / "src", world / "out"
    assert convert(capsys, src, out) == (0, "")
    written = snapshot(out)
    assert MARKER in written
    assert convert(capsys, src, out, "--overwrite") == (0, "")
    assert snapshot(out) == written
    (out / "unet" / "my-lora.safetensors").write_bytes(b"precious")
    before = snapshot(world)
    code, err = convert(capsys, src, out, "--overwrite")
    assert_refused(code, err, "holds unet/my-lora.safetensors, which it did not write")
    assert snapshot(world) == before


def test_a_leftover_of_the_old_temporary_name_is_never_touched(world, capsys):
    leftover = world / "out.converting"
    leftover.mkdir()
    (leftover / "thesis.tex").write_text("years of work")
    before = snapshot(world)
    assert convert(capsys, world / "models" / "src", world / "out") == (0, "")
    after = snapshot(world)
    assert {k: v for k, v in after.items() if not k.startswith("out/")} == before
    assert sorted(p.name for p in world.iterdir()) == ["models", "out", "out.converting", "user"]


def test_the_source_inside_the_destination_through_a_link_is_refused(world, capsys):
    """A Hugging Face cache snapshot links its files into blobs/: replacing blobs/ would delete the source."""
    store = world / "store"
    shutil.move(world / "models" / "src" / "unet", store)
    (world / "models" / "src" / "unet").symlink_to(store)
    before = snapshot(world)
    code, err = convert(capsys, world / "models" / "src", store, "--overwrite")
    assert_refused(code, err, "lies inside the destination")
    assert snapshot(world) == before


def test_an_interrupted_conversion_leaves_nothing(world, capsys, monkeypatch):
    import kolors.loading.conversion as convert_module

    real = convert_module._convert_weights
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(convert_module, "_convert_weights", interrupted)
    before = snapshot(world)
    code, err = convert(capsys, world / "models" / "src", world / "new" / "out")
    assert code == 130 and err == "kolors: error: interrupted\n"
    assert snapshot(world) == before
    assert sorted(p.name for p in world.iterdir()) == ["models", "user"]


def test_the_built_in_model_keeps_its_canny_controlnet_and_vocabulary(tmp_path, capsys):
    from kolors.loading.locate import conventional_controlnet_folder

    out = tmp_path / "shapes-fp16"
    assert convert(capsys, "built-in", out) == (0, "")
    shipped = EMBEDDED_MODEL_DIR.parent / f"{EMBEDDED_MODEL_DIR.name}-controlnet-canny"
    assert (out / "controlnet-canny" / "config.json").is_file()
    assert (snapshot(out / "controlnet-canny")["diffusion_pytorch_model.fp16.safetensors"]
            == snapshot(shipped)["diffusion_pytorch_model.fp16.safetensors"])  # already fp16: the same bytes
    assert conventional_controlnet_folder("canny", out) == out / "controlnet-canny"
    # the words of its training captions travel too: the converted copy still names the words it never learned
    assert (out / "vocabulary.json").read_bytes() == (EMBEDDED_MODEL_DIR / "vocabulary.json").read_bytes()
