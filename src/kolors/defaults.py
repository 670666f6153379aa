"""Settings of the official Kolors scripts (and diffusers' Kolors pipelines), importable without torch or
diffusers, so the CLI's parser can show them."""

IMG2IMG_STRENGTH = 0.3  # diffusers' KolorsImg2ImgPipeline default
INPAINT_STRENGTH = 0.999  # the official Kolors inpainting script
INPAINT_STEPS = 25  # ... with the 9-channel Kolors-Inpainting UNet
INPAINT_GUIDANCE = 6.0
CONTROL_SCALE = 0.7  # ControlNet conditioning scale
CONTROL_START = 0.0  # fraction of the steps where the ControlNet starts
CONTROL_END = 0.9  # ... and where it stops
CANNY_THRESHOLDS = (100, 200)  # low / high hysteresis thresholds
