"""The CLI's image-prompt options: ``--ip-adapter IMAGE[:SCALE]``, ``--face-id IMAGE_OR_EMBEDDING[:SCALE]``, …

They become the request's ``ip_adapter`` (:class:`kolors.request.ImagePrompt`) and ``face_id``
(:class:`kolors.request.FaceId`) entries, are stored in the PNG parameters and replayed by ``--from-image`` (options
given win).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ..errors import KolorsError

log = logging.getLogger("kolors")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the image-prompt option group to ``parser``."""
    from ..defaults import FACE_ID_SCALE, IP_ADAPTER_SCALE

    g = parser.add_argument_group("image prompts (IP-Adapter)")
    g.add_argument("--ip-adapter", metavar="IMAGE[:SCALE]",
                   help=f"reference image for Kolors-IP-Adapter-Plus (scale default {IP_ADAPTER_SCALE})")
    g.add_argument("--ip-adapter-model", metavar="DIR", help="Kwai-Kolors/Kolors-IP-Adapter-Plus folder")
    g.add_argument("--face-id", metavar="IMAGE_OR_EMBEDDING[:SCALE]",
                   help="face photo (needs insightface + antelopev2) or 512-d embedding .npy/.pt for "
                        f"Kolors-IP-Adapter-FaceID-Plus (scale default {FACE_ID_SCALE})")
    g.add_argument("--face-image", metavar="IMAGE", help="face crop for --face-id given as an embedding")
    g.add_argument("--face-id-model", metavar="DIR", help="Kwai-Kolors/Kolors-IP-Adapter-FaceID-Plus folder")


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().absolute())


def image_prompts_from(args: argparse.Namespace, stored: dict[str, Any]) -> tuple[Any, Any]:
    """The request's ``(ip_adapter, face_id)`` entries: from the options, else from ``stored`` (a
    ``--from-image`` record; an entry whose files are not here is left out with a warning)."""
    from ..defaults import FACE_ID_SCALE, IP_ADAPTER_SCALE
    from ..request import FaceId, ImagePrompt
    from .common import path_and_number

    PLUS, FACE_ID = "ip_adapter", "face_id"
    out: dict[str, dict[str, Any]] = {}
    if args.ip_adapter:
        image, scale = path_and_number(args.ip_adapter, "--ip-adapter", "scale")
        out[PLUS] = {"image": image, "scale": IP_ADAPTER_SCALE if scale is None else scale,
                     "model": args.ip_adapter_model}
    elif isinstance(stored.get(PLUS), dict):
        out[PLUS] = {**stored[PLUS], **({"model": args.ip_adapter_model} if args.ip_adapter_model else {})}
    if args.face_id:
        face, scale = path_and_number(args.face_id, "--face-id", "scale")
        out[FACE_ID] = {"face": face, "image": args.face_image, "scale": FACE_ID_SCALE if scale is None else scale,
                        "model": args.face_id_model}
    elif isinstance(stored.get(FACE_ID), dict):
        out[FACE_ID] = {**stored[FACE_ID], **({"model": args.face_id_model} if args.face_id_model else {})}
        if args.face_image:
            out[FACE_ID]["image"] = args.face_image
    elif args.face_image:
        raise KolorsError("--face-image goes with --face-id EMBEDDING")
    for kind, option, model_option in ((PLUS, "--ip-adapter", "--ip-adapter-model"),
                                       (FACE_ID, "--face-id", "--face-id-model")):
        spec = out.get(kind)
        if spec is None:
            if getattr(args, f"{kind}_model"):
                raise KolorsError(f"{model_option} goes with {option} {'IMAGE' if kind == PLUS else 'FACE'}[:SCALE]")
            continue
        if not spec.get("model"):
            raise KolorsError(f"{option} needs {model_option} DIR (the Kwai-Kolors adapter folder)")
        for key in [k for k in ("model", "image", "face") if k in spec]:
            value = spec.get(key)
            if value is not None and not Path(value).expanduser().exists():
                what = {"model": f"{model_option} folder", "image": "image", "face": "face image or embedding"}[key]
                if stored.get(kind) and not getattr(args, kind):
                    log.warning("the %s of the stored %s (%s) is not found here: generating without it", what,
                                option, value)
                    out.pop(kind)
                    break
                raise KolorsError(f"{option}: {what} not found: {value}")
            spec[key] = _absolute(value) if value is not None else None
        if kind in out and spec.get("image" if kind == PLUS else "face") is None:
            raise KolorsError(f"the stored {option} input was not recorded: give {option} "
                              f"{'IMAGE' if kind == PLUS else 'IMAGE_OR_EMBEDDING'}")
    plus = ImagePrompt.from_dict(out[PLUS]) if PLUS in out else None
    face_id = FaceId.from_dict(out[FACE_ID]) if FACE_ID in out else None
    return plus, face_id
