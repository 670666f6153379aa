"""A generation's steps on ComfyUI's progress bar, with latent previews, and its Cancel button.

Used as the pipeline's ``on_step`` callback: after every denoising step it checks ComfyUI's interrupt flag
(raising ComfyUI's own InterruptProcessingException stops the generation at that step) and moves the node's
progress bar, with a preview of the first image when ComfyUI runs with ``--preview-method`` other than none.
Outside ComfyUI it does nothing.
"""

from __future__ import annotations

from typing import Any


class ComfyProgress:
    """Progress over ``runs`` generations (one per input image) of one sampler node."""

    def __init__(self, pipe: Any, runs: int = 1) -> None:
        self.pipe = pipe
        self.runs = runs
        self.run = 0
        self._bar: Any = None
        try:
            import comfy.model_management
            import comfy.utils
            from comfy.cli_args import LatentPreviewMethod, args
        except ImportError:  # plain Python: nothing to report to
            self._comfy = None
            return
        self._comfy = comfy
        self._preview_size = args.preview_size
        self._previews = args.preview_method != LatentPreviewMethod.NoPreviews

    def __call__(self, info: Any) -> None:
        """The pipeline's ``on_step``: ``info`` is a :class:`~kolors.pipelines.pipeline.StepInfo`."""
        if self._comfy is None:
            return
        self._comfy.model_management.throw_exception_if_processing_interrupted()
        per_run = info.batches * info.steps
        if self._bar is None:
            self._bar = self._comfy.utils.ProgressBar(self.runs * per_run)
        done = self.run * per_run + info.batch * info.steps + info.step
        preview = None
        if self._previews:
            preview = ("JPEG", self.pipe.preview(info.latents[:1])[0], self._preview_size)
        self._bar.update_absolute(done, self.runs * per_run, preview)
