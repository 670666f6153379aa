"""`kolors convert`: the original layout (pickle ChatGLM shards) becomes fp16 safetensors with the same model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kolors import load_pipeline
from kolors.cli.main import main
from kolors.errors import KolorsError
from kolors.loading.conversion import convert_model


@pytest.fixture(scope="module")
def converted(tiny_kolors_original, tmp_path_factory):
    dst = tmp_path_factory.mktemp("convert") / "kolors-fp16"
    report = convert_model(tiny_kolors_original, dst)
    return tiny_kolors_original, dst, report


def test_every_weight_is_fp16_safetensors_and_no_python_file_is_copied(converted):
    src, dst, report = converted
    assert not list(dst.rglob("*.bin")) and not list(dst.rglob("*.py"))
    assert list(src.rglob("*.py"))  # the source does bundle them
    te = dst / "text_encoder"
    index = json.loads((te / "model.safetensors.index.fp16.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert shards == ["model.fp16-00001-of-00002.safetensors", "model.fp16-00002-of-00002.safetensors"]
    assert report.components["text_encoder"]["from"] == ["pytorch_model-00001-of-00002.bin",
                                                         "pytorch_model-00002-of-00002.bin"]
    assert "auto_map" not in json.loads((te / "config.json").read_text())
    from safetensors import safe_open

    for path in dst.rglob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        assert dtypes <= {"F16", "I64", "I32", "BOOL"}, (path, dtypes)
    for name in ("unet", "vae"):
        assert (dst / name / "diffusion_pytorch_model.fp16.safetensors").is_file()
    assert (dst / "tokenizer" / "tokenizer.model").is_file()
    assert json.loads((dst / "model_index.json").read_text()) == json.loads((src / "model_index.json").read_text())


def test_the_converted_model_makes_the_same_image(converted):
    src, dst, _ = converted
    kwargs = dict(seed=3, steps=3, width=64, height=64, progress=False)
    before = np.asarray(load_pipeline(src, device="cpu")("一个红色的圆形", **kwargs).images[0])
    after = np.asarray(load_pipeline(dst, device="cpu")("一个红色的圆形", **kwargs).images[0])
    np.testing.assert_array_equal(before, after)


def test_diffusers_reads_the_converted_folder(converted):
    from diffusers import KolorsPipeline

    _, dst, _ = converted
    pipe = KolorsPipeline.from_pretrained(str(dst), variant="fp16", torch_dtype=torch.float32)
    assert pipe.text_encoder.encoder.layers[0].self_attention.query_key_value.weight.dtype == torch.float32


def test_existing_destination_is_refused_and_nothing_half_written_stays(converted, tmp_path, capsys):
    src, dst, _ = converted
    with pytest.raises(KolorsError, match="already exists"):
        convert_model(src, dst)
    assert main(["convert", str(src), str(dst)]) == 2
    assert "already exists" in capsys.readouterr().err
    broken = tmp_path / "broken"
    (broken / "unet").mkdir(parents=True)
    (broken / "model_index.json").write_text("{}")
    assert main(["convert", str(broken), str(tmp_path / "out")]) == 2
    assert "'scheduler' component folder is missing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.converting").exists()
