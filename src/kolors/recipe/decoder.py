"""Fine-tune the decoder of a model folder's VAE on rendered scenes, its encoder frozen.

    python -m kolors.recipe.decoder MODEL --out DIR [--steps 300] [--lr 2e-4] [--scenes 4000] [--seed 0]

A diffusion model learns the latents of the VAE's encoder; the encoder does not change here, so the UNet and the
text encoder are kept exactly as they are and only the drawing of their latents improves (small dark shapes on gray,
purple against blue: the colours a round trip through the built-in model's first VAE got wrong). Before and after,
the checker reads a round trip (encode, decode) of held-out rendered scenes, and the result is printed and added to
the folder's README.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..arguments import Parser, non_negative_int, positive_int, positive_number
from ..devices import is_device_name
from ..errors import KolorsError, run_tool
from ..files import staging_folder

__all__ = ["roundtrip_accuracy", "finetune_decoder", "main"]
PROG = "python -m kolors.recipe.decoder"  # how its errors and usage name it

KINDS = ("single", "count", "pair")


def _scenes(rng: np.random.Generator, n: int, kinds: Sequence[str | None]) -> list:
    from ..data.shapes import sample_scene

    return [sample_scene(rng, "train", kind=kinds[i % len(kinds)]) for i in range(n)]


def _render(scenes: list, size: int) -> np.ndarray:
    from ..data.shapes import render_array

    return np.stack([render_array(scene, size) for scene in scenes])


def roundtrip_accuracy(vae, scenes: list, images: np.ndarray, *, batch_size: int = 32) -> dict[str, float]:
    """Share of ``scenes`` whose round trip through ``vae`` (posterior mean, decode) the checker reads as the
    scene's colours and shapes, by kind: ``{"pair colour": 0.92, ...}``."""
    from ..evaluation import shapes_checker
    from .autoencoder import to_model_range

    right, total = Counter(), Counter()
    vae.eval()
    with torch.no_grad():
        for start in range(0, len(scenes), batch_size):
            x = to_model_range(torch.from_numpy(images[start:start + batch_size]))
            y = vae.decode(vae.encode(x).latent_dist.mean).sample
            decoded = ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
            for scene, image in zip(scenes[start:start + batch_size], decoded):
                colour, shape = shapes_checker.check(image, scene)
                total[scene.kind] += 1
                right[f"{scene.kind} colour"] += colour
                right[f"{scene.kind} shape"] += shape
    return {key: right[key] / total[key.split()[0]] for key in sorted(right)}


def finetune_decoder(model: str | Path, out: str | Path, *, steps: int = 300, lr: float = 2e-4, scenes: int = 4000,
                     test_scenes: int = 450, batch_size: int = 16, seed: int = 0, device: str = "auto",
                     log=print) -> dict:
    """Write to ``out`` the model folder ``model`` with its VAE's decoder trained ``steps`` steps on ``scenes``
    rendered scenes (the encoder frozen); returns the round-trip accuracies before and after and the timing."""
    from diffusers import AutoencoderKL

    from ..devices import resolve_device
    from .autoencoder import check_fp16_decode, train_vae
    from .export import check_destination, check_exported_model
    from .initialise import weights_variant

    model, out = Path(model), Path(out)
    check_exported_model(model, ("vae",))
    check_destination(out, model)
    device_ = resolve_device(device)
    vae = AutoencoderKL.from_pretrained(str(model / "vae"), **weights_variant(model / "vae")).float()
    size = int(json.loads((model / "kolors_defaults.json").read_text()).get("width", 128)) \
        if (model / "kolors_defaults.json").is_file() else 128

    rng = np.random.default_rng(seed)
    test = _scenes(rng, test_scenes, KINDS)
    test_images = _render(test, size)
    before = roundtrip_accuracy(vae, test, test_images)
    log("round trip before: " + ", ".join(f"{k} {v:.1%}" for k, v in before.items()))
    pool = torch.from_numpy(_render(_scenes(rng, scenes, [None]), size))
    start = time.monotonic()
    metrics = train_vae(vae, pool, steps=steps, batch_size=batch_size, lr=lr, device=device_,
                        generator=torch.Generator().manual_seed(seed), decoder_only=True,
                        log=lambda step, m: log(f"decoder step {step}/{steps}: l1 {m['l1']:.4f} psnr {m['psnr']:.2f}"),
                        log_every=max(1, min(50, steps // 10)))
    seconds = time.monotonic() - start
    vae = vae.cpu().float()
    after = roundtrip_accuracy(vae, test, test_images)
    log("round trip after: " + ", ".join(f"{k} {v:.1%}" for k, v in after.items()))
    fp16 = check_fp16_decode(vae, torch.randn(8, vae.config.latent_channels, size // 8, size // 8,
                                              generator=torch.Generator().manual_seed(seed)), device=torch.device("cpu"))
    if not fp16["safe"]:
        raise KolorsError(f"the fine-tuned decoder is not safe in fp16 (peak activation {fp16['peak_activation']:.0f}): "
                          "try a lower --lr or fewer --steps (nothing was written)")

    result = {"steps": metrics["steps"], "seconds": seconds, "lr": lr, "scenes": scenes, "seed": seed,
              "psnr": metrics["psnr"], "roundtrip_before": before, "roundtrip_after": after}
    with staging_folder(out, replace=lambda existing: check_destination(existing, model)) as staging:
        shutil.copytree(model, staging, dirs_exist_ok=True)
        shutil.rmtree(staging / "vae")
        vae.to(torch.float16).save_pretrained(str(staging / "vae"), variant="fp16", safe_serialization=True)
        config = json.loads((staging / "vae" / "config.json").read_text())
        config.pop("_name_or_path", None)  # a path of this machine, not a fact of the model
        (staging / "vae" / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        readme = staging / "README.md"
        note = (f"\n## Decoder fine-tuned\n\n`python -m kolors.recipe.decoder {model.name} --steps {steps} --lr {lr:g} "
                f"--scenes {scenes} --seed {seed}`: {metrics['steps']} steps in {seconds:.0f} s, the encoder frozen "
                "(the UNet's latents unchanged). Round trip of held-out rendered scenes read by the checker, "
                "before → after: " + ", ".join(f"{k} {before[k]:.1%} → {after[k]:.1%}" for k in before) + ".\n")
        if readme.is_file():
            readme.write_text(readme.read_text(encoding="utf-8") + note, encoding="utf-8")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="a model folder the recipe exported")
    p.add_argument("--out", type=Path, required=True, help="the new model folder")
    p.add_argument("--steps", type=positive_int, default=300)
    p.add_argument("--lr", type=positive_number, default=2e-4)
    p.add_argument("--scenes", type=positive_int, default=4000, help="rendered scenes to train on")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    if not is_device_name(args.device):
        p.error(f"argument --device: one of auto, cpu, cuda, mps (cuda:N for one GPU of several), got {args.device!r}")

    def work() -> str:
        result = finetune_decoder(args.model, args.out, steps=args.steps, lr=args.lr, scenes=args.scenes,
                                  seed=args.seed, device=args.device)
        return f"decoder fine-tuned {result['steps']} steps in {result['seconds']:.0f} s → {args.out}"

    return run_tool(work, PROG)


if __name__ == "__main__":
    from ..libraries import quiet_import_notes
    from ..signals import run_command

    quiet_import_notes("diffusers", "transformers")  # this process is the tool's: the libraries' notes stay off

    raise SystemExit(run_command(main, prog=PROG))
