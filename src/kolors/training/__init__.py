"""Training: the recipe of the embedded default model (``python -m kolors.training.embedded``).

Modules, by job:

* ``tokenizer``      SentencePiece BPE trained on captions, saved as a ChatGLM tokenizer folder
* ``vae``            a small AutoencoderKL, its scaling factor and fp16 check
* ``text_to_image``  ChatGLM-style text encoder + SDXL-style UNet trained with the Kolors conditioning
* ``data``           the pre-rendered pool of synthetic shape scenes with tokenized bilingual captions
* ``evaluate``       held-out generation with diffusers' KolorsPipeline, scored by the shapes checker
* ``embedded``       the whole recipe: stages, checkpoints, time budget, export, defaults, README
"""
