"""The recipe of the built-in Kolors-shapes model: ``python -m kolors.recipe --out DIR [...]``.

A small model of the Kolors architecture trained from scratch (or continued) on the synthetic bilingual shapes
data of :mod:`kolors.data.shapes`. Modules, by job:

* ``options``       every option of the command, with defaults by device
* ``architecture``  the small ChatGLM3 / SDXL-UNet shapes (``full``, ``tiny``) and the scheduler config (Kolors'
                    epsilon schedule, or v-prediction on a zero-terminal-SNR one)
* ``tokenizer``     SentencePiece BPE trained on captions, saved as a ChatGLM tokenizer folder
* ``pool``          the pre-rendered scenes with tokenized bilingual captions the stages train on
* ``autoencoder``   the small AutoencoderKL: training, scaling factor, fp16 check
* ``trainer``       one joint step of text encoder + UNet (the loss is ``kolors.training.loss``), EMA
* ``initialise``    ``--init-from``: weights of an earlier model carried over by token text, a UNet grown deeper
* ``grounding``     the cross-attention maps of ``--attention-grounding``
* ``weighting``     the per-cell loss weights of ``--foreground-weight``
* ``vocabulary``    the words a model learned (``vocabulary.json``, read by the CLI's unknown-word note)
* ``export``        the diffusers Kolors folder (fp16 variant) and its README
* ``evaluate``      held-out generation with diffusers' KolorsPipeline, scored by the shapes checker
* ``run``           the stages in order (``RecipeRun``), resume and time budget
* ``average``       ``python -m kolors.recipe.average``: weight average of runs of one lineage
* ``decoder``       ``python -m kolors.recipe.decoder``: a model's VAE decoder fine-tuned, its encoder kept

Dependencies point one way: the recipe uses ``kolors.training`` (the loss), never the reverse.
"""

PROG = "python -m kolors.recipe"  # how the command's usage and errors name it
