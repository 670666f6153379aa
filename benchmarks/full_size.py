"""Full-size Kolors components with random weights, built straight on the GPU in fp16 (for benchmarks only).

The shapes are the published ones (../shared/KOLORS_LAYOUTS.md); the values are random, which does not change
speed or memory. The tokenizer is a small SentencePiece model: only the 256-token padded length matters here.
``scale="tiny"`` builds the same layout at toy sizes (the benchmarks' ``--smoke`` runs on a CPU).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel

from kolors.loading.components import KolorsComponents
from kolors.models.chatglm import ChatGLMConfig, ChatGLMModel, ChatGLMTokenizer, init_chatglm_weights

UNET_CONFIG = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280), transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=2048, encoder_hid_dim=4096, encoder_hid_dim_type="text_proj",
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=5632,
    use_linear_projection=True, norm_num_groups=32,
)
VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=1024,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.13025, force_upcast=True,
)
CHATGLM3_CONFIG = dict(
    num_layers=28, padded_vocab_size=65024, hidden_size=4096, ffn_hidden_size=13696, kv_channels=128,
    num_attention_heads=32, seq_length=32768, add_qkv_bias=True, multi_query_attention=True,
    multi_query_group_num=2, original_rope=True, rmsnorm=True, post_layer_norm=True, layernorm_epsilon=1e-5,
    apply_query_key_layer_scaling=True, attention_softmax_in_fp32=True, torch_dtype="float16",
)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1100, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.014,
    prediction_type="epsilon", timestep_spacing="leading", steps_offset=1,
)
# The same layout at toy sizes: three UNet levels with transformer blocks, ChatGLM3's attention scheme, a
# factor-8 VAE; every linear dimension a multiple of 16 (as the fp8 layers need).
TINY_CONFIGS = {
    "unet": dict(UNET_CONFIG, sample_size=8, layers_per_block=1, block_out_channels=(32, 32, 64),
                 transformer_layers_per_block=(1, 1, 1), attention_head_dim=(2, 2, 4), cross_attention_dim=32,
                 encoder_hid_dim=64, addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 64,
                 norm_num_groups=8),
    "vae": dict(VAE_CONFIG, layers_per_block=1, block_out_channels=(16, 16, 32, 32), norm_num_groups=8,
                sample_size=64),
    "text_encoder": dict(CHATGLM3_CONFIG, num_layers=2, padded_vocab_size=512, hidden_size=64, ffn_hidden_size=128,
                         kv_channels=16, num_attention_heads=4, seq_length=256),
}
CONFIGS = {"full": {"unet": UNET_CONFIG, "vae": VAE_CONFIG, "text_encoder": CHATGLM3_CONFIG}, "tiny": TINY_CONFIGS}
PROMPT_SENTENCES = [
    "一张瓢虫的照片，微距，变焦，高质量，电影，拿着一个牌子，写着“可图”",
    "a photo of a ladybug, macro, zoom, high quality, film, holding a sign that says Kolors",
    "日落时分的海滩，金色的光芒洒在海浪上", "a cozy wooden cabin in a snowy forest at night",
] * 8


def small_tokenizer(folder: Path) -> ChatGLMTokenizer:
    """A ChatGLM tokenizer trained on a few sentences, written to ``folder/tokenizer.model``."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(PROMPT_SENTENCES), model_writer=buf, model_type="bpe", byte_fallback=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, vocab_size=400, character_coverage=1.0, minloglevel=2,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    return ChatGLMTokenizer(vocab_file=str(folder / "tokenizer.model"))


@torch.no_grad()
def build_full_size(workdir: Path, device: str = "cuda", dtype: torch.dtype = torch.float16,
                    scale: str = "full") -> KolorsComponents:
    """Random-weight Kolors components (``scale`` "full" or "tiny"), built directly on ``device`` in ``dtype``."""
    configs = CONFIGS[scale]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            unet = UNet2DConditionModel.from_config(configs["unet"])
            vae = AutoencoderKL.from_config(configs["vae"])
            text_encoder = ChatGLMModel(ChatGLMConfig(**configs["text_encoder"]), empty_init=False)
            init_chatglm_weights(text_encoder)
    finally:
        torch.set_default_dtype(previous)
    for m in (unet, vae, text_encoder):
        m.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return KolorsComponents(
        tokenizer=small_tokenizer(workdir / "tokenizer"), text_encoder=text_encoder, unet=unet, vae=vae,
        scheduler=EulerDiscreteScheduler(**SCHEDULER_CONFIG), folder=workdir,
    )


def write_folder(components: KolorsComponents, folder: Path) -> float:
    """Write ``components`` as a diffusers-layout Kolors folder (fp16 weights as the fp16 variant); seconds taken."""
    from diffusers import KolorsPipeline

    c = components
    pipe = KolorsPipeline(vae=c.vae, text_encoder=c.text_encoder, tokenizer=c.tokenizer, unet=c.unet,
                          scheduler=c.scheduler)
    variant = "fp16" if c.unet.dtype == torch.float16 else None
    t0 = time.perf_counter()
    pipe.save_pretrained(folder, variant=variant, safe_serialization=True)
    return time.perf_counter() - t0


def write_full_size(work: Path) -> Path:
    """Full-size random Kolors written once under ``work`` (fp16 variant on the GPU); reused by later commands."""
    folder = work / "kolors-random-full"
    if not (folder / "model_index.json").is_file():
        seconds = write_folder(build_full_size(work), folder)
        print(f"wrote {folder} in {seconds:.0f} s", flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return folder


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())
