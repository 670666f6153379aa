"""The tiny checkpoint writer against the manifest of the published Kolors layouts, and diffusers loading it."""

from __future__ import annotations

import json
import sys
import time

import pytest
import torch
from safetensors import safe_open

from helpers import published_layouts as P
from helpers.tiny_kolors import padded_vocab_size, tokenizer_model_bytes, train_tokenizer_model, write_tiny_kolors

CASES = [(layout, fp16) for layout in P.LAYOUTS for fp16 in (True, False)]
IDS = [f"{layout}-{'fp16' if fp16 else 'fp32'}" for layout, fp16 in CASES]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_kolors_original, tiny_kolors_diffusers):
    """(layout, fp16_variant) -> folder; the fp16 ones are the session fixtures."""
    out = {("kolors", True): tiny_kolors_original, ("diffusers", True): tiny_kolors_diffusers}
    for layout in P.LAYOUTS:
        out[(layout, False)] = write_tiny_kolors(tmp_path_factory.mktemp(f"{layout}_fp32"), layout, fp16_variant=False)
    return out


@pytest.fixture(params=CASES, ids=IDS)
def case(request, folders):
    layout, fp16 = request.param
    return layout, fp16, folders[(layout, fp16)]


def read_json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def text_encoder_state(folder, fmt):
    """{name: tensor} over all shards listed in the text encoder index, plus the index itself."""
    spec = P.TEXT_ENCODER_SHARDS[fmt]
    index = read_json(folder / "text_encoder" / spec["index"])
    state = {}
    for shard in dict.fromkeys(index["weight_map"].values()):
        path = folder / "text_encoder" / shard
        if fmt == "safetensors":
            with safe_open(str(path), "pt") as f:
                state.update({k: f.get_tensor(k) for k in f.keys()})
        else:
            state.update(torch.load(path, map_location="cpu", weights_only=True))
    return state, index


def safetensors_state(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


# --- files -------------------------------------------------------------------------------------------------
def test_required_files_are_present(case):
    layout, fp16, folder = case
    missing = [name for name in P.REQUIRED_FILES[layout] if not (folder / name).is_file()]
    assert not missing
    present, absent = P.weight_file_names(fp16)
    for component in ("unet", "vae"):
        assert (folder / component / present).is_file()
        assert not (folder / component / absent).exists()
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(P.COMPONENTS)


def test_text_encoder_shards_match_their_index(case):
    layout, _, folder = case
    fmt = P.TEXT_ENCODER_FORMAT[layout]
    spec = P.TEXT_ENCODER_SHARDS[fmt]
    shards = sorted(p.name for p in (folder / "text_encoder").iterdir() if spec["shard"].match(p.name))
    assert len(shards) >= 2
    counts = {spec["shard"].match(name).group(2) for name in shards}
    assert counts == {f"{len(shards):05d}"}
    state, index = text_encoder_state(folder, fmt)
    assert sorted(set(index["weight_map"].values())) == shards
    assert set(index["weight_map"]) == set(state)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in state.values())
    other = "safetensors" if fmt == "bin" else "bin"
    assert not (folder / "text_encoder" / P.TEXT_ENCODER_SHARDS[other]["index"]).exists()


def test_text_encoder_tensor_names_and_dtype(case):
    layout, _, folder = case
    state, _ = text_encoder_state(folder, P.TEXT_ENCODER_FORMAT[layout])
    prefix = P.TEXT_ENCODER_PREFIX[layout]
    assert all(k.startswith(prefix) for k in state)
    if not prefix:
        assert not any(k.startswith("transformer.") for k in state)
    assert {prefix + name for name in P.TEXT_ENCODER_TENSORS} <= set(state)
    assert {t.dtype for t in state.values()} == {getattr(torch, P.TEXT_ENCODER_DTYPE)}


def test_unet_and_vae_weights_names_and_dtype(case):
    _, fp16, folder = case
    name, _ = P.weight_file_names(fp16)
    for component, expected in (("unet", P.UNET_TENSORS), ("vae", P.VAE_TENSORS)):
        state = safetensors_state(folder / component / name)
        assert set(expected) <= set(state)
        assert {t.dtype for t in state.values()} == {torch.float16 if fp16 else torch.float32}
        with safe_open(str(folder / component / name), "pt") as f:
            assert f.metadata() == {"format": "pt"}


@pytest.mark.parametrize("layout, fmt", [("kolors", None), ("diffusers", "bin")])
def test_pickle_shards_hold_only_tensors(tmp_path, tiny_kolors_original, layout, fmt):
    folder = tiny_kolors_original if fmt is None else write_tiny_kolors(tmp_path, layout, text_encoder_format=fmt)
    spec = P.TEXT_ENCODER_SHARDS["bin"]
    shards = sorted(p for p in (folder / "text_encoder").iterdir() if spec["shard"].match(p.name))
    assert len(shards) == 2
    for shard in shards:
        state = torch.load(shard, map_location="cpu", weights_only=True)
        assert isinstance(state, dict) and state
        assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


@pytest.mark.parametrize("layout, fmt", [("kolors", "safetensors"), ("diffusers", "bin")])
def test_other_text_encoder_format_loads_the_same_weights(tmp_path, folders, layout, fmt):
    from diffusers.pipelines.kolors import ChatGLMModel

    folder = write_tiny_kolors(tmp_path, layout, text_encoder_format=fmt)
    state, _ = text_encoder_state(folder, fmt)
    assert all(k.startswith(P.TEXT_ENCODER_PREFIX[layout]) for k in state)
    got = ChatGLMModel.from_pretrained(folder / "text_encoder", dtype=torch.float32).state_dict()
    want = ChatGLMModel.from_pretrained(folders[(layout, True)] / "text_encoder", dtype=torch.float32).state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


def test_bundled_code_raises_if_imported(tiny_kolors_original):
    for name in P.BUNDLED_CODE["kolors"]:
        code = (tiny_kolors_original / name).read_text()
        with pytest.raises(RuntimeError, match="never be executed"):
            exec(compile(code, name, "exec"), {})


# --- configs -----------------------------------------------------------------------------------------------
def test_model_index(case):
    layout, _, folder = case
    index = read_json(folder / "model_index.json")
    assert set(P.MODEL_INDEX_REQUIRED_KEYS) <= set(index)
    assert index["_class_name"] == P.MODEL_INDEX_CLASS[layout]
    assert {c: index[c] for c in P.COMPONENTS} == P.MODEL_INDEX_COMPONENTS
    if layout == "diffusers":
        assert {k: index[k] for k in P.DIFFUSERS_OPTIONAL_COMPONENTS} == P.DIFFUSERS_OPTIONAL_COMPONENTS
    assert "force_zeros_for_empty_prompt" not in index  # only written when asked for


def test_diffusers_model_index_is_what_kolors_pipeline_writes(reference_pipeline, tiny_kolors_diffusers, tmp_path):
    reference_pipeline.save_config(tmp_path)
    written = read_json(tmp_path / "model_index.json")
    ours = read_json(tiny_kolors_diffusers / "model_index.json")
    skip = {"_name_or_path", "force_zeros_for_empty_prompt"}
    assert {k: v for k, v in written.items() if k not in skip} == ours


def test_diffusers_text_encoder_and_tokenizer_configs_are_what_transformers_writes(reference_pipeline,
                                                                                   tiny_kolors_diffusers, tmp_path):
    reference_pipeline.text_encoder.config.save_pretrained(tmp_path / "te")
    written = read_json(tmp_path / "te" / "config.json")
    ours = read_json(tiny_kolors_diffusers / "text_encoder" / "config.json")
    assert set(written) == set(ours)
    assert {k: v for k, v in written.items() if k != "dtype"} == {k: v for k, v in ours.items() if k != "dtype"}
    reference_pipeline.tokenizer.save_pretrained(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == sorted(
        p.name for p in (tiny_kolors_diffusers / "tokenizer").iterdir())
    written = read_json(tmp_path / "tok" / "tokenizer_config.json")
    ours = read_json(tiny_kolors_diffusers / "tokenizer" / "tokenizer_config.json")
    assert ours.items() <= written.items()  # transformers also writes session details (is_local, backend, ...)


@pytest.mark.parametrize("value", [True, False])
def test_force_zeros_for_empty_prompt_is_written_when_given(tmp_path, value):
    from diffusers import KolorsPipeline

    folder = write_tiny_kolors(tmp_path, "diffusers", force_zeros_for_empty_prompt=value)
    assert read_json(folder / "model_index.json")["force_zeros_for_empty_prompt"] is value
    assert KolorsPipeline.load_config(folder)["force_zeros_for_empty_prompt"] is value


def test_scheduler_config(case):
    from diffusers import EulerDiscreteScheduler

    _, _, folder = case
    config = read_json(folder / "scheduler" / "scheduler_config.json")
    assert {k: config.get(k) for k in P.SCHEDULER_VALUES} == P.SCHEDULER_VALUES
    scheduler = EulerDiscreteScheduler.from_config(config)
    scheduler.set_timesteps(50)
    assert int(scheduler.timesteps[0]) == P.SCHEDULER_FIRST_TIMESTEP_AT_50_STEPS


def test_unet_config(case):
    _, _, folder = case
    config = read_json(folder / "unet" / "config.json")
    assert {k: config.get(k) for k in P.UNET_VALUES} == P.UNET_VALUES
    assert set(P.UNET_REQUIRED_KEYS) <= set(config)
    te = read_json(folder / "text_encoder" / "config.json")
    assert config["encoder_hid_dim"] == te["hidden_size"]
    assert config["projection_class_embeddings_input_dim"] == 6 * config["addition_time_embed_dim"] + te["hidden_size"]
    published = P.PUBLISHED_UNET
    assert published["projection_class_embeddings_input_dim"] == (
        6 * published["addition_time_embed_dim"] + published["encoder_hid_dim"])
    assert len(config["block_out_channels"]) == len(config["transformer_layers_per_block"]) == len(
        config["attention_head_dim"]) == len(config["down_block_types"])


def test_vae_config(case):
    _, _, folder = case
    config = read_json(folder / "vae" / "config.json")
    assert {k: config.get(k) for k in P.VAE_VALUES} == P.VAE_VALUES
    assert set(P.VAE_REQUIRED_KEYS) <= set(config)


def test_text_encoder_config(case):
    layout, _, folder = case
    config = read_json(folder / "text_encoder" / "config.json")
    assert {k: config.get(k) for k in P.TEXT_ENCODER_VALUES} == P.TEXT_ENCODER_VALUES
    assert set(P.TEXT_ENCODER_REQUIRED_KEYS) <= set(config)
    assert config["seq_length"] >= P.TEXT_ENCODER_MIN_SEQ_LENGTH
    assert [config[k] for k in P.TEXT_ENCODER_DTYPE_KEYS[layout] if k in config] == [P.TEXT_ENCODER_DTYPE]
    assert config["num_attention_heads"] % config["multi_query_group_num"] == 0
    if layout == "kolors":
        auto_map = config["auto_map"]
        assert auto_map["AutoConfig"] == P.TEXT_ENCODER_AUTO_MAP["AutoConfig"]
        assert auto_map["AutoModel"].startswith(P.TEXT_ENCODER_AUTO_MAP["AutoModel"])
        for target in auto_map.values():
            assert (folder / "text_encoder" / (target.split(".")[0] + ".py")).is_file()
    else:
        assert "auto_map" not in config


def test_tokenizer_files(case):
    layout, _, folder = case
    config = read_json(folder / "tokenizer" / "tokenizer_config.json")
    assert {k: config.get(k) for k in P.TOKENIZER_CONFIG_VALUES} == P.TOKENIZER_CONFIG_VALUES
    model = (folder / "tokenizer" / "tokenizer.model").read_bytes()
    assert model == tokenizer_model_bytes()
    if layout == "kolors":
        assert (folder / "text_encoder" / "tokenizer.model").read_bytes() == model
        assert (folder / "tokenizer" / "vocab.txt").read_bytes() == model


# --- loading with diffusers --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loaded(folders):
    """(layout, fp16_variant) -> KolorsPipeline loaded by diffusers (fp32)."""
    from diffusers import KolorsPipeline

    return {key: KolorsPipeline.from_pretrained(folder, variant="fp16" if key[1] else None, dtype=torch.float32)
            for key, folder in folders.items()}


def test_kolors_pipeline_loads_every_layout(case, loaded):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from diffusers.pipelines.kolors import ChatGLMModel, ChatGLMTokenizer, KolorsPipeline

    layout, fp16, _ = case
    pipe = loaded[(layout, fp16)]
    assert type(pipe) is KolorsPipeline
    assert isinstance(pipe.text_encoder, ChatGLMModel) and isinstance(pipe.tokenizer, ChatGLMTokenizer)
    assert isinstance(pipe.unet, UNet2DConditionModel) and isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler)
    assert pipe.vae_scale_factor == 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    assert {p.dtype for p in pipe.text_encoder.parameters()} == {torch.float32}
    assert not [m for m in sys.modules if m.split(".")[-1] in ("modeling_chatglm", "configuration_chatglm",
                                                                  "tokenization_chatglm")]


def test_same_seed_gives_the_same_weights_in_every_layout(loaded):
    reference = loaded[("diffusers", True)]
    for key, pipe in loaded.items():
        for name in ("text_encoder", "unet", "vae"):
            a, b = getattr(reference, name).state_dict(), getattr(pipe, name).state_dict()
            assert a.keys() == b.keys(), (key, name)
            assert all(torch.equal(a[k], b[k]) for k in a), (key, name)


def test_another_seed_gives_other_weights(tmp_path, tiny_kolors_diffusers):
    other = write_tiny_kolors(tmp_path, "diffusers", seed=1)
    name = P.DIFFUSERS_WEIGHTS[True]
    a, b = safetensors_state(tiny_kolors_diffusers / "unet" / name), safetensors_state(other / "unet" / name)
    assert not torch.equal(a["conv_in.weight"], b["conv_in.weight"])


@pytest.mark.parametrize("layout", P.LAYOUTS)
def test_text_encoder_and_tokenizer_classes_load_the_folders(folders, layout):
    from diffusers.pipelines.kolors import ChatGLMModel, ChatGLMTokenizer

    folder = folders[(layout, True)]
    model = ChatGLMModel.from_pretrained(folder / "text_encoder", dtype=torch.float32)
    assert model.config.padded_vocab_size == padded_vocab_size()
    for tokenizer in (ChatGLMTokenizer.from_pretrained(folder / "tokenizer"),
                      ChatGLMTokenizer(vocab_file=str(folder / "tokenizer" / "tokenizer.model"))):
        assert tokenizer.padding_side == P.TOKENIZER_PADDING_SIDE
        assert tokenizer.vocab_size <= model.config.padded_vocab_size
        ids = tokenizer("一只红色的猫 a blue square", padding="max_length", max_length=256, return_tensors="pt")
        assert ids["input_ids"].shape == (1, 256) and "position_ids" in ids
        assert ids["input_ids"][0, 0] == tokenizer.pad_token_id == 0  # padded on the left
        first = int(ids["attention_mask"][0].argmax())
        prefix = tokenizer.convert_ids_to_tokens(ids["input_ids"][0, first:first + 2].tolist())
        assert tuple(prefix) == P.TOKENIZER_PREFIX_TOKENS
        assert int(ids["input_ids"].max()) < model.config.padded_vocab_size


def test_weights_are_finite_and_prompts_give_distinct_embeddings(reference_pipeline):
    for name in ("text_encoder", "unet", "vae"):
        for param_name, param in getattr(reference_pipeline, name).named_parameters():
            assert torch.isfinite(param).all() and param.abs().max() < 20, (name, param_name)
    prompts = ["一只红色的猫坐在沙发上", "a blue square on the left", "日落时的群山", ""]
    with torch.no_grad():
        embeds, _, pooled, _ = reference_pipeline.encode_prompt(prompts, device="cpu",
                                                                do_classifier_free_guidance=False)
    assert embeds.shape[:2] == (len(prompts), 256) and pooled.shape[0] == len(prompts)
    assert torch.isfinite(embeds).all() and torch.isfinite(pooled).all()
    assert 0.3 < embeds.std() < 10
    for i in range(len(prompts)):
        for j in range(i):
            assert (embeds[i] - embeds[j]).abs().max() > 0.5
            assert (pooled[i] - pooled[j]).abs().max() > 0.5


# --- the writer itself -------------------------------------------------------------------------------------
def test_writing_a_folder_is_fast(tmp_path):
    tokenizer_model_bytes()  # trained once per session anyway
    for layout in P.LAYOUTS:
        start = time.perf_counter()
        write_tiny_kolors(tmp_path / layout, layout)
        assert time.perf_counter() - start < 5


def test_tokenizer_training_is_reproducible():
    assert train_tokenizer_model() == tokenizer_model_bytes()


def test_bad_arguments_are_refused(tmp_path, tiny_kolors_diffusers):
    with pytest.raises(ValueError, match="layout"):
        write_tiny_kolors(tmp_path, "sdxl")
    with pytest.raises(ValueError, match="text_encoder_format"):
        write_tiny_kolors(tmp_path, "diffusers", text_encoder_format="gguf")
    with pytest.raises(FileExistsError):
        write_tiny_kolors(tiny_kolors_diffusers.parent, "diffusers")
