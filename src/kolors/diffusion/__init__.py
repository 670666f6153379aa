"""The parts of the diffusion algorithm that every task shares: Kolors' text conditioning (prompt.py), the
denoising loop (denoise.py), the conditioners that join it (conditioning.py) and perturbed-attention guidance
(pag.py). Pipelines assemble these; adapters add conditioners."""
