"""Model classes: the UNet and VAE are diffusers' own; the text encoder is ChatGLM3 (models.chatglm)."""
