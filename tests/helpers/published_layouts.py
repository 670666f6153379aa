"""What the published Kolors folders contain: file names, config keys and values, tensor names.

Sources: /work/shared/KOLORS_LAYOUTS.md (the Hub repositories cannot be read from here) and what diffusers 0.42 /
transformers 5 write (``KolorsPipeline.save_config``, ``ChatGLMModel.save_pretrained``). Entries marked
UNVERIFIED are assumptions the tiny fixture makes where neither source says; they are listed in ``UNVERIFIED``.

Layout names: "kolors" = ``Kwai-Kolors/Kolors`` (original release), "diffusers" = ``Kwai-Kolors/Kolors-diffusers``.
"""

from __future__ import annotations

import re

LAYOUTS = ("kolors", "diffusers")
HUB_IDS = {"kolors": "Kwai-Kolors/Kolors", "diffusers": "Kwai-Kolors/Kolors-diffusers"}
COMPONENTS = ("scheduler", "text_encoder", "tokenizer", "unet", "vae")

# --- model_index.json --------------------------------------------------------------------------------------
# [library, class] per component. "kolors" resolves to diffusers.pipelines.kolors when diffusers loads it.
MODEL_INDEX_COMPONENTS = {
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["kolors", "ChatGLMModel"],
    "tokenizer": ["kolors", "ChatGLMTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
# Optional components KolorsPipeline.save_config writes as [null, null] when absent.
DIFFUSERS_OPTIONAL_COMPONENTS = {"feature_extractor": [None, None], "image_encoder": [None, None]}
MODEL_INDEX_CLASS = {
    "diffusers": "KolorsPipeline",
    "kolors": "StableDiffusionXLPipeline",  # UNVERIFIED: the official scripts' pipeline class
}
MODEL_INDEX_REQUIRED_KEYS = ("_class_name", "_diffusers_version", *COMPONENTS)

# --- files -------------------------------------------------------------------------------------------------
# Files each layout must have, besides the weight files (below). Paths relative to the model folder.
REQUIRED_FILES = {
    "kolors": (
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/configuration_chatglm.py",
        "text_encoder/modeling_chatglm.py",
        "text_encoder/tokenization_chatglm.py",
        "text_encoder/tokenizer.model",
        "text_encoder/tokenizer_config.json",
        "tokenizer/tokenizer.model",
        "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.txt",
        "tokenizer/tokenization_chatglm.py",
        "unet/config.json",
        "vae/config.json",
    ),
    "diffusers": (
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "tokenizer/tokenizer.model",
        "tokenizer/tokenizer_config.json",
        "unet/config.json",
        "vae/config.json",
    ),
}
# Bundled remote code (original layout only): must never be imported by a loader.
BUNDLED_CODE = {
    "kolors": (
        "text_encoder/configuration_chatglm.py",
        "text_encoder/modeling_chatglm.py",
        "text_encoder/tokenization_chatglm.py",
        "tokenizer/tokenization_chatglm.py",
    ),
    "diffusers": (),
}

# UNet and VAE weights: one safetensors file, the fp16 variant in the published repositories.
DIFFUSERS_WEIGHTS = {
    True: "diffusion_pytorch_model.fp16.safetensors",   # fp16_variant
    False: "diffusion_pytorch_model.safetensors",
}

# ChatGLM3 weights: transformers-style shards + index.
TEXT_ENCODER_SHARDS = {
    "bin": {"index": "pytorch_model.bin.index.json", "shard": re.compile(r"^pytorch_model-(\d{5})-of-(\d{5})\.bin$")},
    "safetensors": {"index": "model.safetensors.index.json",
                    "shard": re.compile(r"^model-(\d{5})-of-(\d{5})\.safetensors$")},
}
TEXT_ENCODER_FORMAT = {
    "kolors": "bin",  # seven pickle shards in the real release
    "diffusers": "safetensors",  # UNVERIFIED: "exact shard names not verified"; what transformers 5 writes
}
PUBLISHED_TEXT_ENCODER_SHARD_COUNT = {"kolors": 7}
# Tensor name prefix in the ChatGLM shards (the ChatGLMModel base_model_prefix in the original).
TEXT_ENCODER_PREFIX = {
    "kolors": "transformer.",
    "diffusers": "",  # UNVERIFIED: ChatGLMModel.save_pretrained writes the bare names
}
TEXT_ENCODER_TENSORS = (  # bare names; every checkpoint has these (layer 0 stands for every layer)
    "embedding.word_embeddings.weight",
    "encoder.layers.0.input_layernorm.weight",
    "encoder.layers.0.self_attention.query_key_value.weight",
    "encoder.layers.0.self_attention.query_key_value.bias",
    "encoder.layers.0.self_attention.dense.weight",
    "encoder.layers.0.post_attention_layernorm.weight",
    "encoder.layers.0.mlp.dense_h_to_4h.weight",
    "encoder.layers.0.mlp.dense_4h_to_h.weight",
    "encoder.final_layernorm.weight",
    "output_layer.weight",
    "rotary_pos_emb.inv_freq",
)
UNET_TENSORS = (  # diffusers key names, including Kolors' text projection and text_time embedding
    "conv_in.weight",
    "time_embedding.linear_1.weight",
    "add_embedding.linear_1.weight",
    "encoder_hid_proj.weight",
    "conv_out.weight",
)
VAE_TENSORS = ("encoder.conv_in.weight", "quant_conv.weight", "post_quant_conv.weight", "decoder.conv_out.weight")
TEXT_ENCODER_DTYPE = "float16"

# --- configs -----------------------------------------------------------------------------------------------
SCHEDULER_VALUES = {
    "_class_name": "EulerDiscreteScheduler",
    "num_train_timesteps": 1100,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.014,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "steps_offset": 1,
}
SCHEDULER_FIRST_TIMESTEP_AT_50_STEPS = 1079

UNET_VALUES = {  # values every Kolors UNet has, whatever its size
    "_class_name": "UNet2DConditionModel",
    "encoder_hid_dim_type": "text_proj",
    "addition_embed_type": "text_time",
    "use_linear_projection": True,
    "in_channels": 4,
    "out_channels": 4,
}
UNET_REQUIRED_KEYS = (
    "block_out_channels", "down_block_types", "up_block_types", "layers_per_block", "transformer_layers_per_block",
    "attention_head_dim", "cross_attention_dim", "encoder_hid_dim", "addition_time_embed_dim",
    "projection_class_embeddings_input_dim", "sample_size", "norm_num_groups",
)
PUBLISHED_UNET = {  # the full-size model
    "block_out_channels": [320, 640, 1280],
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "encoder_hid_dim": 4096,
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 5632,  # 6 * addition_time_embed_dim + encoder_hid_dim
    "sample_size": 128,
}

VAE_VALUES = {"_class_name": "AutoencoderKL", "scaling_factor": 0.13025, "force_upcast": True, "latent_channels": 4}
VAE_REQUIRED_KEYS = ("block_out_channels", "down_block_types", "up_block_types", "layers_per_block", "sample_size",
                     "in_channels", "out_channels", "norm_num_groups")

TEXT_ENCODER_VALUES = {
    "model_type": "chatglm",
    "architectures": ["ChatGLMModel"],
    "original_rope": True,
    "add_qkv_bias": True,
    "multi_query_attention": True,
    "multi_query_group_num": 2,
    "rmsnorm": True,
}
TEXT_ENCODER_REQUIRED_KEYS = (
    "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "kv_channels", "padded_vocab_size",
    "seq_length", "layernorm_epsilon", "post_layer_norm", "add_bias_linear",
    "apply_residual_connection_post_layernorm",
)
TEXT_ENCODER_MIN_SEQ_LENGTH = 256  # prompts are padded to 256 tokens
# The original config points at its bundled code (remote code); never to be executed.
TEXT_ENCODER_AUTO_MAP = {
    "AutoConfig": "configuration_chatglm.ChatGLMConfig",
    "AutoModel": "modeling_chatglm.",  # prefix: the class name after it varies between ChatGLM3 copies
}
# The config key that holds the dtype: transformers 4 wrote torch_dtype, transformers 5 writes dtype.
TEXT_ENCODER_DTYPE_KEYS = {"kolors": ("torch_dtype",), "diffusers": ("dtype", "torch_dtype")}
PUBLISHED_TEXT_ENCODER = {
    "num_layers": 28,
    "hidden_size": 4096,
    "ffn_hidden_size": 13696,
    "num_attention_heads": 32,
    "kv_channels": 128,
    "padded_vocab_size": 65024,
    "seq_length": 32768,
}

TOKENIZER_CONFIG_VALUES = {"tokenizer_class": "ChatGLMTokenizer"}
TOKENIZER_PADDING_SIDE = "left"
TOKENIZER_PREFIX_TOKENS = ("[gMASK]", "sop")

UNVERIFIED = (
    "model_index.json _class_name and _diffusers_version of the original release (StableDiffusionXLPipeline assumed)",
    "component [library, class] entries of the original release (taken to equal the diffusers port's)",
    "text encoder file names and tensor name prefix in Kolors-diffusers (transformers 5 save_pretrained assumed)",
    "tokenizer/vocab.txt content (written as a copy of tokenizer.model)",
    "original scheduler_config.json keys beyond the values in SCHEDULER_VALUES",
    "tokenizer_config.json content beyond tokenizer_class",
)


def weight_file_names(fp16_variant: bool) -> tuple[str, str]:
    """(present, absent) UNet/VAE weight file names for a folder written with ``fp16_variant``."""
    return DIFFUSERS_WEIGHTS[fp16_variant], DIFFUSERS_WEIGHTS[not fp16_variant]
