"""Weight averaging ("model soup") of model folders that the built-in model's recipe exported from one lineage.

    python -m kolors.recipe.average --out DIR FOLDER_A FOLDER_B [...] [--weights 0.5,0.5]

The UNet and text-encoder weights are averaged tensor by tensor. The folders' tokenizers may number the same tokens
differently (each recipe run trains its own), so the rows of the text encoder's vocabulary-sized tensors are
matched by token text, as ``--init-from`` does. The tokenizer, VAE, scheduler and configs come from the first
folder. Averaging only makes sense for runs continued from a common ancestor.
"""

from __future__ import annotations

import argparse
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..arguments import Parser, non_negative_number
from ..errors import KolorsError, run_tool
from ..files import staging_folder

__all__ = ["average_models", "row_order", "main"]
PROG = "python -m kolors.recipe.average"  # how its errors and usage name it

AVERAGED = ("unet", "text_encoder")
VOCABULARY_TENSORS = ("embedding.word_embeddings.weight", "output_layer.weight")


def row_order(base_vocab: Mapping[str, int], other_vocab: Mapping[str, int], rows: int) -> torch.Tensor:
    """For each row of a vocabulary-sized tensor of the base model, the row of the other model holding the same
    token; rows of ids no token has (padding) stay in place."""
    order = list(range(rows))
    for token, i in base_vocab.items():
        if token not in other_vocab:
            raise KolorsError(f"token {token!r} is missing from the other tokenizer: average models of one lineage")
        order[i] = other_vocab[token]
    return torch.tensor(order)


def _weights_file(folder: Path, part: str) -> Path:
    files = sorted((folder / part).glob("*.safetensors"))
    if len(files) != 1:
        raise KolorsError(f"{folder / part} should hold one .safetensors file, found {len(files)}")
    return files[0]


def average_models(folders: Sequence[str | Path], out: str | Path, weights: Sequence[float] | None = None) -> Path:
    """Write to ``out`` the first folder with its UNet and text encoder replaced by the weighted average of all
    ``folders``' (``weights`` default to equal and are normalised to sum to 1). Returns ``out``."""
    from .export import check_destination, check_exported_model
    from .tokenizer import load_tokenizer

    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise KolorsError("give at least two model folders to average")
    weights = [1.0] * len(folders) if weights is None else [float(w) for w in weights]
    if len(weights) != len(folders) or not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise KolorsError(f"--weights needs {len(folders)} numbers >= 0, not all 0, got {weights}")
    weights = [w / sum(weights) for w in weights]
    for f in folders:
        check_exported_model(f, ("tokenizer", "unet", "text_encoder"))
    out = Path(out)
    for f in folders:
        check_destination(out, f)
    vocabs = [load_tokenizer(f / "tokenizer").get_vocab() for f in folders]

    def may_replace(existing: Path) -> None:  # checked again at the swap: the folder may have changed since
        for f in folders:
            check_destination(existing, f)

    with staging_folder(out, replace=may_replace) as staging:
        shutil.copytree(folders[0], staging, dirs_exist_ok=True)
        for part in AVERAGED:
            files = [_weights_file(f, part) for f in folders]
            states = [load_file(f) for f in files]
            averaged = {}
            orders: dict[int, list[torch.Tensor]] = {}  # by row count: each folder's rows in the base's order
            for name, first in states[0].items():
                total = torch.zeros(first.shape, dtype=torch.float32)
                for k, (state, w) in enumerate(zip(states, weights)):
                    if name not in state or state[name].shape != first.shape:
                        raise KolorsError(f"{part} tensor {name} differs in shape between the folders: "
                                          "average models of one architecture")
                    tensor = state[name].float()
                    if part == "text_encoder" and name in VOCABULARY_TENSORS:
                        rows = first.shape[0]
                        if rows not in orders:
                            orders[rows] = [row_order(vocabs[0], vocab, rows) for vocab in vocabs]
                        tensor = tensor[orders[rows][k]]
                    total += w * tensor
                averaged[name] = total.to(first.dtype)
            save_file(averaged, staging / part / files[0].name, metadata={"format": "pt"})
    return out


def _weight_list(text: str) -> list[float]:
    try:
        return [non_negative_number(w) for w in text.split(",")]
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (comma-separated numbers ≥ 0 such as 0.5,0.5)") from None


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="model folders exported by the recipe")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--weights", type=_weight_list, metavar="W,W,...",
                   help="comma-separated weights ≥ 0, one per folder (default: equal)")
    args = p.parse_args(argv)
    return run_tool(lambda: f"averaged {len(args.folders)} models → "
                            f"{average_models(args.folders, args.out, args.weights)}", PROG)


if __name__ == "__main__":
    from ..libraries import quiet_import_notes
    from ..signals import run_command

    quiet_import_notes("diffusers", "transformers")  # this process is the tool's: the libraries' notes stay off

    raise SystemExit(run_command(main, prog=PROG))
