"""Depth maps from MiDaS run through transformers' DPT classes (a tiny random DPT in the transformers layout)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kolors.annotators.maps import MIDAS_FILE, MIDAS_FOLDER, control_map
from kolors.errors import KolorsError


@pytest.fixture(scope="module")
def tiny_dpt(tmp_path_factory):
    from transformers import DPTConfig, DPTForDepthEstimation

    torch.manual_seed(0)
    config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                       image_size=64, patch_size=16, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
                       backbone_out_indices=[0, 1, 2, 3])
    root = tmp_path_factory.mktemp("annotators")
    DPTForDepthEstimation(config).eval().save_pretrained(root / MIDAS_FOLDER)
    return root


@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))


def test_depth_map_from_a_transformers_dpt_folder(tiny_dpt, photo):
    from transformers import DPTForDepthEstimation, DPTImageProcessorPil

    depth = control_map("depth", photo, detect=True, annotator_dir=tiny_dpt)  # the folder holding dpt-hybrid-midas
    assert depth.mode == "RGB" and depth.size == photo.size
    px = np.asarray(depth)
    assert (px[..., 0] == px[..., 2]).all() and px.min() == 0 and px.max() == 255  # normalised to the full range

    model = DPTForDepthEstimation.from_pretrained(tiny_dpt / MIDAS_FOLDER).eval()
    with torch.no_grad():
        raw = model(**DPTImageProcessorPil()(images=photo, return_tensors="pt")).predicted_depth
    raw = torch.nn.functional.interpolate(raw[:, None], size=(40, 56), mode="bicubic")[0, 0].numpy()
    corr = np.corrcoef(raw.ravel(), px[..., 0].astype(float).ravel())[0, 1]
    assert corr > 0.99  # the model's own prediction, rescaled (near = bright, as MiDaS' inverse depth)
    same = control_map("depth", photo, detect=True, annotator_dir=tiny_dpt / MIDAS_FOLDER)  # the folder itself
    assert np.array_equal(np.asarray(same), px)


def test_timm_checkpoint_alone_gets_a_one_line_explanation(tmp_path, photo):
    (tmp_path / MIDAS_FILE).write_bytes(b"not read")
    with pytest.raises(KolorsError, match=f"transformers layout.*{MIDAS_FILE} is the timm-format checkpoint") as err:
        control_map("depth", photo, detect=True, annotator_dir=tmp_path)
    assert "\n" not in str(err.value)


def test_without_annotator_dir_the_error_says_what_to_pass(photo):
    with pytest.raises(KolorsError, match="pass annotator_dir=DIR, or pass a ready depth map"):
        control_map("depth", photo, detect=True)


def test_cli_detects_depth_with_the_annotator_and_records_it(tiny_kolors_diffusers, controlnet_dir, tiny_dpt, photo,
                                                             tmp_path, capsys, monkeypatch):
    from kolors.annotators import maps as preprocess
    from kolors.cli.main import main
    from kolors.metadata import read_parameters

    photo.save(tmp_path / "photo.png")
    made = []
    real = preprocess._dpt_depth
    monkeypatch.setattr(preprocess, "_dpt_depth", lambda image, folder: made.append(folder) or real(image, folder))
    out = tmp_path / "d.png"
    code = main(["generate", "a room", "--model", str(tiny_kolors_diffusers), "--control",
                 f"depth={tmp_path / 'photo.png'}", "--controlnet", f"depth={controlnet_dir}", "--detect", "depth",
                 "--annotators", str(tiny_dpt), "--steps", "2", "-o", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert made == [tiny_dpt / MIDAS_FOLDER]
    assert read_parameters(out)["controls"][0]["detect"] is True
