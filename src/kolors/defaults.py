"""Settings of the official Kolors scripts (and diffusers' Kolors pipelines), one source for each, importable
without torch or diffusers so that the CLI's parser and request checks can use them."""

MODES = ("exact", "fast", "low-memory", "sequential")  # run modes (kolors.performance.modes)
TEXT_ENCODER_QUANTS = ("none", "int8", "int4")
STEPS = 50  # the official Kolors scripts' defaults, used when a model folder declares none
GUIDANCE = 5.0
IMG2IMG_STRENGTH = 0.3  # diffusers' KolorsImg2ImgPipeline default
CONTROL_IMG2IMG_STRENGTH = 0.8  # diffusers' SDXL ControlNet image-to-image default
INPAINT_STRENGTH = 0.999  # the official Kolors inpainting script
INPAINT_STEPS = 25  # ... with the 9-channel Kolors-Inpainting UNet
INPAINT_GUIDANCE = 6.0
OUTPAINT_FEATHER = 8  # px of blend into the kept image: no visible step at the old border
CONTROL_GUIDANCE = 6.0  # the official ControlNet scripts' guidance scale
CONTROL_SCALE = 0.7  # ControlNet conditioning scale
CONTROL_START = 0.0  # fraction of the steps where the ControlNet starts
CONTROL_END = 0.9  # ... and where it stops
CANNY_THRESHOLDS = (100, 200)  # low / high hysteresis thresholds
IP_ADAPTER_SCALE = 0.5  # Kolors-IP-Adapter-Plus
FACE_ID_SCALE = 0.8  # Kolors-IP-Adapter-FaceID-Plus
PAG_LAYERS = ("mid",)  # diffusers' KolorsPAGPipeline default
# SDXL micro-conditioning sizes: stored when they differ from the output size (image-to-image).
MICRO_CONDITIONING = ("original_size", "crop_coords", "target_size")
