"""Tiny random-weight Kolors checkpoints in the two published folder layouts.

``write_tiny_kolors(root, "kolors")`` mimics the original ``Kwai-Kolors/Kolors`` release and
``write_tiny_kolors(root, "diffusers")`` the ``Kwai-Kolors/Kolors-diffusers`` port (see
/work/shared/KOLORS_LAYOUTS.md and ``published_layouts.py`` for the file names and config keys).

The architecture is the real one (ChatGLM3 text encoder with multi-query attention and RMSNorm, a UNet with
Kolors' ``text_proj`` + ``text_time`` conditioning, a KL autoencoder) at toy sizes, so a folder is written in
well under a second. Every parameter is drawn from ``seed`` and rounded to float16, so the fp16 files and the
fp32 files, and the two layouts, hold exactly the same values: the same ``seed`` gives the same model whatever
the layout, ``fp16_variant`` or ``text_encoder_format``.

Both layouts load with diffusers' ``KolorsPipeline.from_pretrained(folder, variant="fp16" if fp16_variant else
None)``. For the original layout that works because ``KolorsPipeline.from_pretrained`` uses its own class (the
folder's ``_class_name`` is the official scripts' ``StableDiffusionXLPipeline``; ``DiffusionPipeline.from_pretrained``
would pick that class and fail), the ``["kolors", "ChatGLMModel"]`` component entries resolve to
``diffusers.pipelines.kolors``, and transformers strips the ``transformer.`` prefix of the ChatGLM tensor names
(the model's ``base_model_prefix``). Reference-parity tests still use the diffusers layout, which is the one
diffusers documents.

Not reproduced (unknown here or pointless at toy size): the real shard counts (7 ChatGLM pickle shards), the
``_diffusers_version`` of the original release, the exact content of ``vocab.txt`` (written as a copy of the
SentencePiece model) and of the original scheduler config beyond the values KOLORS_LAYOUTS.md lists.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from kolors.models.chatglm import CHATGLM3_ARCHITECTURE

LAYOUTS = ("kolors", "diffusers")

# --- tiny sizes --------------------------------------------------------------------------------------------
TEXT_HIDDEN = 64
TEXT_CONFIG = dict(  # ChatGLM3 at toy size (real: 28 layers, hidden 4096, FFN 13696, 32 heads, kv 128)
    num_layers=2,
    hidden_size=TEXT_HIDDEN,
    ffn_hidden_size=128,
    num_attention_heads=4,
    kv_channels=16,
    multi_query_group_num=2,
    **CHATGLM3_ARCHITECTURE,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    classifier_dropout=None,
    seq_length=256,  # prompts are padded to 256 tokens; the rotary cache must cover them
    quantization_bit=0,
    pre_seq_len=None,
    prefix_projection=False,
    tie_word_embeddings=False,
    use_cache=True,
)
ADDITION_TIME_EMBED_DIM = 8
UNET_CONFIG = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(32, 64),
    layers_per_block=1,
    transformer_layers_per_block=(1, 1),
    attention_head_dim=(2, 4),
    norm_num_groups=8,
    cross_attention_dim=32,
    encoder_hid_dim=TEXT_HIDDEN,
    encoder_hid_dim_type="text_proj",
    addition_embed_type="text_time",
    addition_time_embed_dim=ADDITION_TIME_EMBED_DIM,
    projection_class_embeddings_input_dim=6 * ADDITION_TIME_EMBED_DIM + TEXT_HIDDEN,
    use_linear_projection=True,
)
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    block_out_channels=(16, 32),  # vae_scale_factor = 2 ** (len(block_out_channels) - 1) = 2
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=16,
    scaling_factor=0.13025,
    force_upcast=True,
)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1100,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    beta_end=0.014,
    prediction_type="epsilon",
    timestep_spacing="leading",
    steps_offset=1,
)
# What the SDXL-era diffusers wrote beside those values in the original release (not verified key by key).
ORIGINAL_SCHEDULER_EXTRA = dict(
    clip_sample=False,
    interpolation_type="linear",
    sample_max_value=1.0,
    set_alpha_to_one=False,
    skip_prk_steps=True,
    trained_betas=None,
    use_karras_sigmas=False,
)
ORIGINAL_DIFFUSERS_VERSION = "0.18.0.dev0"  # unverified placeholder for the original release

SP_VOCAB_SIZE = 500
CHATGLM_SPECIAL_TOKENS = 9  # [MASK] [gMASK] [sMASK] sop eop <|system|> <|user|> <|assistant|> <|observation|>
NEVER_EXECUTE = 'raise RuntimeError("bundled model code must never be executed")\n'

# Training text for the tiny SentencePiece model: the prompts the tests use, and more of the same kind.
SENTENCES = [
    "一只红色的猫坐在沙发上", "a red cat sitting on a sofa",
    "一个蓝色的正方形在左边", "a blue square on the left",
    "黄色的三角形在画面中央", "a yellow triangle in the middle of the picture",
    "日落时的群山，金色的天空", "mountains at sunset under a golden sky",
    "模糊，低质量，变形", "blurry, low quality, deformed",
    "一只白色的狗在草地上奔跑", "a white dog running on the green grass",
    "绿色的圆形和紫色的星星", "a green circle and a purple star",
    "湖边的小房子，清晨的雾", "a small house by the lake in the morning fog",
    "一只橙色的狐狸在雪地里", "an orange fox in the snow",
    "黑色的马站在海边", "a black horse standing on the beach",
    "粉色的花朵开满了山坡", "pink flowers covering the hillside",
    "一条小河穿过森林", "a small river flowing through the forest",
    "灰色的大象和棕色的熊", "a grey elephant and a brown bear",
    "夜晚的城市，霓虹灯闪烁", "a city at night with shining neon lights",
    "一只红色的圆，一个蓝色的方块", "red circle blue square yellow triangle",
]

_SP_MODEL: bytes | None = None


def train_tokenizer_model() -> bytes:
    """Train the tiny ChatGLM-style SentencePiece model (BPE, byte fallback) and return the .model bytes.

    Single-threaded training on a fixed sentence list gives the same bytes every time (no input path is
    embedded, since the sentences come from an iterator).
    """
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES), model_writer=buffer, model_type="bpe", vocab_size=SP_VOCAB_SIZE,
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0,
        normalization_rule_name="identity", num_threads=1, minloglevel=2,
    )
    return buffer.getvalue()


def tokenizer_model_bytes() -> bytes:
    """The tiny tokenizer model, trained once per process."""
    global _SP_MODEL
    if _SP_MODEL is None:
        _SP_MODEL = train_tokenizer_model()
    return _SP_MODEL


def padded_vocab_size(sp_vocab_size: int = SP_VOCAB_SIZE) -> int:
    """The tokenizer's vocabulary (SentencePiece pieces + ChatGLM special tokens) rounded up to 64."""
    return math.ceil((sp_vocab_size + CHATGLM_SPECIAL_TOKENS) / 64) * 64


# --- random weights ----------------------------------------------------------------------------------------
def _fp16_exact(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` rounded to float16 precision (kept in float32), so fp16 and fp32 files agree exactly."""
    return tensor.half().float()


@torch.no_grad()
def _init_diffusers_model(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Every parameter drawn from ``generator``: fan-in scaled normal weights, small biases, unit norms."""
    for module in model.modules():
        params = dict(module.named_parameters(recurse=False))
        if not params:
            continue
        if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
            if "weight" in params:
                params["weight"].fill_(1.0)
            if "bias" in params:
                params["bias"].zero_()
            continue
        for name, param in params.items():
            if param.ndim >= 2:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(fan_in))
            else:
                param.copy_(0.02 * torch.randn(param.shape, generator=generator))
    for param in model.parameters():
        param.copy_(_fp16_exact(param))


@torch.no_grad()
def _init_chatglm(model: torch.nn.Module, generator: torch.Generator) -> None:
    """ChatGLMModel leaves its weights uninitialised (skip_init, empty RMSNorm weights): set every one."""
    for name, param in model.named_parameters():
        if name.endswith("layernorm.weight"):
            param.fill_(1.0)
        elif "word_embeddings" in name:
            param.copy_(torch.randn(param.shape, generator=generator))  # std 1: prompts give distinct embeddings
        elif name.endswith(".bias"):
            param.copy_(0.02 * torch.randn(param.shape, generator=generator))
        else:  # fan-in scaled, so attention is far from uniform and positions/masks matter
            param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(param.shape[1]))
        param.copy_(_fp16_exact(param))
    for name, buffer in model.named_buffers():
        buffer.copy_(_fp16_exact(buffer))  # rotary inv_freq is stored in fp16 in the real shards too


def _chatglm_config():
    from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig

    return ChatGLMConfig(padded_vocab_size=padded_vocab_size(), **TEXT_CONFIG)


def build_tiny_models(seed: int = 0, unet_in_channels: int = 4) -> dict[str, torch.nn.Module]:
    """The fp32 ``text_encoder``, ``unet`` and ``vae`` of the tiny checkpoint for ``seed`` (fp16-exact values).

    ``unet_in_channels`` 9 gives a Kolors-Inpainting UNet (latents, mask, masked-image latents).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.kolors import ChatGLMModel

    with torch.random.fork_rng(devices=[]):  # constructors draw from the global RNG; leave it as it was
        torch.manual_seed(seed)
        text_encoder = ChatGLMModel(_chatglm_config(), empty_init=False)
        unet = UNet2DConditionModel(**{**UNET_CONFIG, "in_channels": unet_in_channels})
        vae = AutoencoderKL(**VAE_CONFIG)
    _init_chatglm(text_encoder, torch.Generator().manual_seed(seed))
    _init_diffusers_model(unet, torch.Generator().manual_seed(seed + 1))
    _init_diffusers_model(vae, torch.Generator().manual_seed(seed + 2))
    return {"text_encoder": text_encoder.eval(), "unet": unet.eval(), "vae": vae.eval()}


# --- writers -----------------------------------------------------------------------------------------------
def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")


def _write_diffusers_model(model: torch.nn.Module, folder: Path, fp16_variant: bool) -> None:
    """``config.json`` + ``diffusion_pytorch_model[.fp16].safetensors``, as diffusers' save_pretrained writes."""
    folder.mkdir(parents=True)
    model.save_config(folder)
    dtype = torch.float16 if fp16_variant else torch.float32
    name = "diffusion_pytorch_model.fp16.safetensors" if fp16_variant else "diffusion_pytorch_model.safetensors"
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / name), metadata={"format": "pt"})


def _write_sharded(state: dict[str, torch.Tensor], folder: Path, fmt: str, n_shards: int = 2) -> None:
    """``state`` split in ``n_shards`` files in key order, with the transformers index next to them."""
    keys = list(state)
    sizes = [state[k].numel() * state[k].element_size() for k in keys]
    total = sum(sizes)
    stem, ext = ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")
    groups: list[list[str]] = [[] for _ in range(n_shards)]
    running = 0
    for key, size in zip(keys, sizes):
        groups[min(n_shards - 1, running * n_shards // total)].append(key)
        running += size
    weight_map = {}
    for i, group in enumerate(groups, start=1):
        name = f"{stem}-{i:05d}-of-{n_shards:05d}.{ext}"
        shard = {k: state[k].contiguous() for k in group}
        if fmt == "safetensors":
            save_file(shard, str(folder / name), metadata={"format": "pt"})
        else:
            torch.save(shard, folder / name)
        weight_map.update(dict.fromkeys(group, name))
    metadata = {"total_size": total}
    if fmt == "safetensors":
        metadata = {"total_parameters": sum(state[k].numel() for k in keys), "total_size": total}
    index = {"metadata": metadata, "weight_map": dict(sorted(weight_map.items()))}
    _write_json(folder / f"{stem}.{ext}.index.json", index)


def _text_encoder_config(config, layout: str) -> dict:
    data = config.to_diff_dict()  # what save_pretrained writes (no generic PretrainedConfig defaults)
    for key in ("dtype", "torch_dtype", "transformers_version", "_name_or_path", "vocab_size"):
        data.pop(key, None)
    data["architectures"] = ["ChatGLMModel"]
    if layout == "kolors":  # the ChatGLM3-6B-base config: remote-code auto_map, legacy torch_dtype key
        data["_name_or_path"] = "THUDM/chatglm3-6b-base"
        data["auto_map"] = {
            "AutoConfig": "configuration_chatglm.ChatGLMConfig",
            "AutoModel": "modeling_chatglm.ChatGLMModel",
        }
        data["torch_dtype"] = "float16"
        data["transformers_version"] = "4.30.2"
    else:  # what transformers 5 save_pretrained writes for diffusers' ChatGLMModel
        data["dtype"] = "float16"
        import transformers

        data["transformers_version"] = transformers.__version__
        data["vocab_size"] = data["padded_vocab_size"]
    return dict(sorted(data.items()))


def _tokenizer_config(layout: str) -> dict:
    if layout == "kolors":  # ChatGLM3's own tokenizer_config.json (remote-code auto_map)
        return {
            "name_or_path": "THUDM/chatglm3-6b-base",
            "remove_space": False,
            "do_lower_case": False,
            "tokenizer_class": "ChatGLMTokenizer",
            "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]},
        }
    return {  # the keys transformers' save_pretrained writes for diffusers' ChatGLMTokenizer
        "added_tokens_decoder": {},
        "clean_up_tokenization_spaces": False,
        "encode_special_tokens": False,
        "model_max_length": 1000000000000000019884624838656,
        "padding_side": "left",
        "tokenizer_class": "ChatGLMTokenizer",
    }


def write_tiny_kolors(
    root: Path,
    layout: str = "diffusers",
    *,
    seed: int = 0,
    fp16_variant: bool = True,
    text_encoder_format: str | None = None,
    force_zeros_for_empty_prompt: bool | None = None,
    inpainting: bool = False,
) -> Path:
    """Write a tiny random Kolors model folder under ``root`` and return it.

    layout: "kolors" (original ``Kwai-Kolors/Kolors``: pickle ChatGLM shards named ``transformer.*``, bundled
        remote-code files that raise when imported) or "diffusers" (``Kwai-Kolors/Kolors-diffusers``).
    fp16_variant: UNet/VAE weights in ``diffusion_pytorch_model.fp16.safetensors`` (fp16) instead of
        ``diffusion_pytorch_model.safetensors`` (fp32); the values are the same either way.
    text_encoder_format: "bin" (pickle shards) or "safetensors"; default "bin" for "kolors", "safetensors" for
        "diffusers". The ChatGLM text encoder is always stored in fp16, as published.
    force_zeros_for_empty_prompt: written to ``model_index.json`` when not None.
    inpainting: a ``Kwai-Kolors/Kolors-Inpainting``-style folder (``Kolors-Inpainting``): the UNet takes 9 input
        channels; everything else as the layout says.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: expected one of {LAYOUTS}")
    text_encoder_format = text_encoder_format or ("bin" if layout == "kolors" else "safetensors")
    if text_encoder_format not in ("bin", "safetensors"):
        raise ValueError(f"unknown text_encoder_format {text_encoder_format!r}: expected 'bin' or 'safetensors'")
    import diffusers
    from diffusers import EulerDiscreteScheduler

    root = Path(root)
    folder = root / ("Kolors" if layout == "kolors" else "Kolors-diffusers")
    if inpainting:
        folder = root / "Kolors-Inpainting"
    folder.mkdir(parents=True)  # FileExistsError rather than writing over an existing folder
    models = build_tiny_models(seed, unet_in_channels=9 if inpainting else 4)

    # model_index.json
    components = {
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["kolors", "ChatGLMModel"],
        "tokenizer": ["kolors", "ChatGLMTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if layout == "kolors":
        index = {"_class_name": "StableDiffusionXLPipeline", "_diffusers_version": ORIGINAL_DIFFUSERS_VERSION}
    else:
        index = {"_class_name": "KolorsPipeline", "_diffusers_version": diffusers.__version__}
        components.update(feature_extractor=[None, None], image_encoder=[None, None])
    if force_zeros_for_empty_prompt is not None:
        index["force_zeros_for_empty_prompt"] = bool(force_zeros_for_empty_prompt)
    index.update(sorted(components.items()))
    _write_json(folder / "model_index.json", index)

    # scheduler
    (folder / "scheduler").mkdir()
    if layout == "kolors":
        scheduler = {"_class_name": "EulerDiscreteScheduler", "_diffusers_version": ORIGINAL_DIFFUSERS_VERSION,
                     **SCHEDULER_CONFIG, **ORIGINAL_SCHEDULER_EXTRA}
        _write_json(folder / "scheduler" / "scheduler_config.json", dict(sorted(scheduler.items())))
    else:
        EulerDiscreteScheduler(**SCHEDULER_CONFIG).save_config(folder / "scheduler")

    # unet, vae
    _write_diffusers_model(models["unet"], folder / "unet", fp16_variant)
    _write_diffusers_model(models["vae"], folder / "vae", fp16_variant)

    # text encoder
    te_dir = folder / "text_encoder"
    te_dir.mkdir()
    text_encoder = models["text_encoder"]
    _write_json(te_dir / "config.json", _text_encoder_config(text_encoder.config, layout))
    prefix = "transformer." if layout == "kolors" else ""
    state = {prefix + k: v.detach().half() for k, v in text_encoder.state_dict().items()}
    _write_sharded(state, te_dir, text_encoder_format)

    # tokenizer (the original also keeps a copy of the tokenizer files in text_encoder/)
    sp_model = tokenizer_model_bytes()
    tok_dir = folder / "tokenizer"
    tok_dir.mkdir()
    (tok_dir / "tokenizer.model").write_bytes(sp_model)
    _write_json(tok_dir / "tokenizer_config.json", _tokenizer_config(layout))
    if layout == "kolors":
        (tok_dir / "vocab.txt").write_bytes(sp_model)
        for directory in (tok_dir, te_dir):
            (directory / "tokenization_chatglm.py").write_text(NEVER_EXECUTE)
        (te_dir / "tokenizer.model").write_bytes(sp_model)
        _write_json(te_dir / "tokenizer_config.json", _tokenizer_config(layout))
        for name in ("configuration_chatglm.py", "modeling_chatglm.py"):
            (te_dir / name).write_text(NEVER_EXECUTE)
    return folder
