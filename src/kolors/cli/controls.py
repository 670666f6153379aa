"""The CLI's ControlNet options: ``--control TYPE=IMAGE[:SCALE]`` (repeatable), ``--controlnet TYPE=DIR``, …

Twins of :class:`kolors.request.Control` (``type``, ``image``, ``scale``, ``start``, ``end``,
``controlnet``, ``thresholds``). The controls are stored in the PNG parameters (``controls``) and replayed by
``--from-image`` (``--control`` options given win; ``--controlnet`` / ``--control-start`` / ``--control-end``
change the stored ones).

A type's ControlNet folder: ``--controlnet TYPE=DIR``, else the one stored with the control, else where
:func:`kolors.loading.locate.conventional_controlnet_folder` finds one (for the built-in model the ControlNet
shipped beside it; ``controlnet-<type>`` inside the model folder, where ``kolors convert`` puts a model's
ControlNets; ``Kolors-ControlNet-<Type>`` next to it; ``Kwai-Kolors/Kolors-ControlNet-<Type>`` in the local Hugging
Face cache).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ..errors import KolorsError

log = logging.getLogger("kolors")
KINDS = ("canny", "depth", "pose")
DETECTABLE = ("depth", "pose")  # kinds whose map an annotator can make from a photo


def _thresholds(text: str) -> tuple[int, int]:
    try:
        low, high = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH whole numbers (e.g. 100,200), got '{text}'") from None
    return low, high


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ControlNet option group to ``parser``."""
    from ..defaults import CANNY_THRESHOLDS
    from ..defaults import CONTROL_END as DEFAULT_END
    from ..defaults import CONTROL_SCALE as DEFAULT_SCALE
    from ..defaults import CONTROL_START as DEFAULT_START

    g = parser.add_argument_group("ControlNet")
    g.add_argument("--control", action="append", default=[], metavar="TYPE=IMAGE[:SCALE]",
                   help=f"steer with a Kolors ControlNet ({'|'.join(KINDS)}; repeatable): canny takes a photo "
                        f"(edges are computed), depth/pose a ready map (or a photo with --detect); scale default "
                        f"{DEFAULT_SCALE}; guidance defaults to 6.0 with a control")
    g.add_argument("--controlnet", action="append", default=[], metavar="TYPE=DIR",
                   help="ControlNet folder for TYPE (default: the shipped canny ControlNet with the built-in "
                        "model, else controlnet-<type> inside the model folder, else Kolors-ControlNet-<Type> beside "
                        "it, else Kwai-Kolors/Kolors-ControlNet-<Type> in the local Hugging Face cache)")
    g.add_argument("--control-start", type=float, metavar="F",
                   help=f"fraction of the steps after which the controls act (default {DEFAULT_START})")
    g.add_argument("--control-end", type=float, metavar="F",
                   help=f"fraction of the steps until which the controls act (default {DEFAULT_END})")
    g.add_argument("--canny-thresholds", type=_thresholds, metavar="LOW,HIGH",
                   help=f"canny edge thresholds (default {CANNY_THRESHOLDS[0]},{CANNY_THRESHOLDS[1]})")
    g.add_argument("--detect", action="append", default=[], choices=DETECTABLE, metavar="TYPE",
                   help="the --control image of TYPE (depth|pose; repeatable) is a photo: make its map with the "
                        "annotator from --annotators (depth: MiDaS; pose: DWPose, needs "
                        'pip install "kolors[annotators]")')
    g.add_argument("--annotators", type=Path, metavar="DIR",
                   help="annotator weights: a transformers DPT folder (Intel/dpt-hybrid-midas) or a folder "
                        "holding one named dpt-hybrid-midas; for pose, the folder holding the DWPose files "
                        "yolox_l.onnx and dw-ll_ucoco_384.onnx (one folder may hold both)")


def _parse_control(text: str) -> dict[str, Any]:
    from .common import path_and_number

    kind, sep, rest = text.partition("=")
    if not sep or not kind or not rest:
        raise KolorsError(f"--control expects TYPE=IMAGE[:SCALE] (e.g. canny=photo.png:0.7), got '{text}'")
    image, scale = path_and_number(rest, f"--control {kind.strip()}=", "scale")
    return {"type": kind.strip(), "image": image, **({"scale": scale} if scale is not None else {})}


def _folders(args: argparse.Namespace) -> dict[str, str]:
    folders = {}
    for text in args.controlnet:
        kind, sep, folder = text.partition("=")
        if not sep or not kind or not folder:
            raise KolorsError(f"--controlnet expects TYPE=DIR (e.g. canny=Kolors-ControlNet-Canny), got '{text}'")
        if not Path(folder).expanduser().is_dir():
            raise KolorsError(f"--controlnet {kind.strip()}: ControlNet folder not found: {folder}")
        folders[kind.strip()] = str(Path(folder).expanduser().absolute())
    return folders


def controls_from(args: argparse.Namespace, stored: dict[str, Any]) -> list:
    """The request's controls: the ``--control`` options, else the stored ones (``--from-image``; a control whose
    image is not here is left out with a warning); ``--controlnet`` / ``--control-start`` / ``--control-end`` /
    ``--canny-thresholds`` / ``--detect`` apply to either. Folders are absolute; a control without one gets the
    pipeline's (checked before the model loads)."""
    from ..request import Control

    folders = _folders(args)
    if args.control:
        controls, replayed = [_parse_control(text) for text in args.control], False
    else:
        controls = [dict(c) for c in stored.get("controls") or [] if isinstance(c, dict)]
        replayed = bool(controls)
    for kind in folders:
        if not any(c["type"] == kind for c in controls):
            raise KolorsError(f"--controlnet {kind}=… goes with --control {kind}=IMAGE")
    for kind in args.detect:
        from ..annotators.maps import ANNOTATOR_HINTS, check_annotator

        if not any(c["type"] == kind for c in controls):
            raise KolorsError(f"--detect {kind} goes with --control {kind}=PHOTO")
        if args.annotators is None:
            raise KolorsError(f"--detect {kind} needs the annotator weights: --annotators DIR "
                              f"({ANNOTATOR_HINTS[kind]})")
        check_annotator(kind, args.annotators)
    kept = []
    for control in controls:
        kind = control["type"]
        if args.control_start is not None:
            control["start"] = args.control_start
        if args.control_end is not None:
            control["end"] = args.control_end
        if args.canny_thresholds is not None and kind == "canny":
            control["thresholds"] = list(args.canny_thresholds)
        if kind in args.detect:
            control["detect"] = True
        image = control.get("image")
        if replayed and (image is None or not Path(image).expanduser().exists()):
            log.warning("the %s control image of %s (%s) is not found here: generating without it "
                        "(give --control %s=IMAGE)", kind, args.from_image, image, kind)
            continue
        if kind in folders:
            control["controlnet"] = folders[kind]
        elif control.get("controlnet") and not Path(control["controlnet"]).expanduser().is_dir():
            control["controlnet"] = None  # recorded elsewhere: the conventional folder here
        kept.append(Control.from_dict(control))
    return kept
