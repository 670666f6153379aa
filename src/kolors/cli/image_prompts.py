"""The CLI's image-prompt options: ``--ip-adapter IMAGE[:SCALE]``, ``--face-id IMAGE_OR_EMBEDDING[:SCALE]``, …

Twins of :func:`kolors.adapters.ip_adapter.load_ip_adapter` / ``load_face_id``. The settings are stored in the
PNG parameters (``ip_adapter`` / ``face_id`` records) and replayed by ``--from-image`` (options given win).
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
    g = parser.add_argument_group("image prompts (IP-Adapter)")
    g.add_argument("--ip-adapter", metavar="IMAGE[:SCALE]",
                   help="reference image for Kolors-IP-Adapter-Plus (scale default 0.5)")
    g.add_argument("--ip-adapter-model", metavar="DIR", help="Kwai-Kolors/Kolors-IP-Adapter-Plus folder")
    g.add_argument("--face-id", metavar="IMAGE_OR_EMBEDDING[:SCALE]",
                   help="face photo (needs insightface + antelopev2) or 512-d embedding .npy/.pt for "
                        "Kolors-IP-Adapter-FaceID-Plus (scale default 0.8)")
    g.add_argument("--face-image", metavar="IMAGE", help="face crop for --face-id given as an embedding")
    g.add_argument("--face-id-model", metavar="DIR", help="Kwai-Kolors/Kolors-IP-Adapter-FaceID-Plus folder")


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().absolute())


def specs(args: argparse.Namespace, stored: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What to load: from the options, else from ``stored`` (a ``--from-image`` record); files are checked."""
    from ..adapters.ip_adapter import DEFAULT_SCALES, FACE_ID, PLUS, parse_image_spec

    out: dict[str, dict[str, Any]] = {}
    if args.ip_adapter:
        image, scale = parse_image_spec(args.ip_adapter, DEFAULT_SCALES[PLUS])
        out[PLUS] = {"image": image, "scale": scale, "model": args.ip_adapter_model}
    elif isinstance(stored.get(PLUS), dict):
        out[PLUS] = {**stored[PLUS], **({"model": args.ip_adapter_model} if args.ip_adapter_model else {})}
    if args.face_id:
        face, scale = parse_image_spec(args.face_id, DEFAULT_SCALES[FACE_ID])
        out[FACE_ID] = {"face": face, "image": args.face_image, "scale": scale, "model": args.face_id_model}
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
        for key in ("model", "image", "face"):
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
    return out


def apply(pipe: Any, wanted: dict[str, dict[str, Any]]) -> None:
    """Load the adapters of ``wanted`` (from :func:`specs`) into ``pipe``."""
    from ..adapters.image_prompts import FACE_ID, PLUS, load_face_id, load_ip_adapter

    if PLUS in wanted:
        s = wanted[PLUS]
        if s.get("image") is None:
            raise KolorsError("the stored --ip-adapter image was not recorded: give --ip-adapter IMAGE")
        load_ip_adapter(pipe, s["model"], s["image"], float(s.get("scale", 0.5)))
    if FACE_ID in wanted:
        s = wanted[FACE_ID]
        if s.get("face") is None:
            raise KolorsError("the stored --face-id input was not recorded: give --face-id IMAGE_OR_EMBEDDING")
        load_face_id(pipe, s["model"], s["face"], float(s.get("scale", 0.8)), image=s.get("image"))
