"""Prompts: Kolors text encoding (ChatGLM3, Chinese or English, 256 tokens) and the SDXL size conditioning."""

from __future__ import annotations

from typing import Any

from .objects import CONDITIONING, MODEL, KolorsConditioning, KolorsModel

MAX_SIZE = 16384


def token_report(pipe: Any, text: str) -> str:
    """How much of ``text`` the model reads: its token count against the 256-token context."""
    from ..diffusion.prompt import MAX_TOKENS, count_dropped_tokens

    tokenizer = pipe.components.tokenizer
    total = len(tokenizer(text, add_special_tokens=True)["input_ids"])
    dropped = count_dropped_tokens(tokenizer, text, MAX_TOKENS)
    if dropped:
        return (f"{total} tokens: the last {dropped} do not fit in the model's {MAX_TOKENS}-token context and are "
                "dropped (shorten the prompt)")
    return f"{total} of {MAX_TOKENS} tokens"


class KolorsTextEncode:
    """A prompt (Chinese or English) encoded by the model's ChatGLM3 text encoder."""

    CATEGORY = "Kolors/conditioning"
    RETURN_TYPES = (CONDITIONING, "STRING")
    RETURN_NAMES = ("conditioning", "tokens")
    OUTPUT_TOOLTIPS = ("the prompt, for the sampler's positive or negative input",
                       "how many tokens the prompt takes of the 256 the model reads (and how many are dropped)")
    FUNCTION = "encode"
    DESCRIPTION = ("Encodes a Chinese or English prompt with Kolors' ChatGLM3 text encoder (256 tokens; longer "
                   "prompts are cut, which the tokens output reports). Use one for the positive prompt and one "
                   "for the negative prompt.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": (MODEL, {}),
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "the prompt (中文 or English)"}),
        }}

    def encode(self, model: KolorsModel, text: str) -> tuple[KolorsConditioning, str]:
        report = token_report(model.pipe, text)
        model.pipe.encode_prompt(text, guidance=False)  # encoded here (and cached) rather than in the sampler
        return KolorsConditioning(text), report


class KolorsSizeConditioning:
    """SDXL micro-conditioning: the original size, crop and target size the model is told about."""

    CATEGORY = "Kolors/conditioning"
    RETURN_TYPES = (CONDITIONING,)
    RETURN_NAMES = ("conditioning",)
    FUNCTION = "apply"
    DESCRIPTION = ("Sets the SDXL size conditioning of a (positive) prompt: the size the picture is said to come "
                   "from, its crop's top-left corner and the target size. 0 means the output size.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = {"default": 0, "min": 0, "max": MAX_SIZE, "step": 8}
        crop = {"default": 0, "min": 0, "max": MAX_SIZE}
        return {"required": {
            "conditioning": (CONDITIONING, {}),
            "original_width": ("INT", {**size, "tooltip": "0: the output width"}),
            "original_height": ("INT", {**size, "tooltip": "0: the output height"}),
            "crop_left": ("INT", crop),
            "crop_top": ("INT", crop),
            "target_width": ("INT", {**size, "tooltip": "0: the output width"}),
            "target_height": ("INT", {**size, "tooltip": "0: the output height"}),
        }}

    def apply(self, conditioning: KolorsConditioning, original_width: int, original_height: int, crop_left: int,
              crop_top: int, target_width: int, target_height: int) -> tuple[KolorsConditioning]:
        def pair(width: int, height: int) -> tuple[int, int] | None:
            return (height, width) if width and height else None

        return (conditioning.replace(original_size=pair(original_width, original_height),
                                     target_size=pair(target_width, target_height),
                                     crop_coords=(crop_top, crop_left)),)
