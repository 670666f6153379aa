"""`kolors train`: fine-tuning (full, LoRA, DreamBooth) and ControlNet training of Kolors models.

Modules, by job:

* ``config``      run settings: YAML/TOML file + ``--set`` overrides, errors naming file and key
* ``dataset``     image folders (metadata.jsonl or .txt captions, conditioning images), aspect buckets, batch order
* ``finetune``    the accelerate training loop of every mode
* ``loss``        the diffusion loss with Min-SNR-γ weighting (also the built-in model's recipe's, ``kolors.recipe``)
* ``lora``        peft LoRA layers, saved in diffusers' LoRA format
* ``controlnet``  the ControlNet that trains and its saved folder
* ``checkpoint``  atomic step-N checkpoints, ``--resume latest``, pruning
"""
