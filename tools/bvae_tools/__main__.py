"""Command line: ``python -m bvae_tools COMMAND ...`` (run from tools/).

Commands: train, export, report, synth, photos, bench, oneclass, metrics."""

from __future__ import annotations

import argparse
import sys

from .errors import UserError

DESCRIPTION = """\
Train a β-VAE on images, export it to ONNX for the bvae runtime, and draw a
report. Typical use:

  python -m bvae_tools train --images frames/ --out runs/cam
  python -m bvae_tools export runs/cam --out ../models/cam.onnx
  python -m bvae_tools report runs/cam

No camera frames yet? `python -m bvae_tools synth --out frames/` writes some, and
`python -m bvae_tools photos --out photos/` writes real photographs for bvae's
`--source photos:photos/` camera scene.
"""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the uninformative ones (unset options and off switches)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _threads(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of threads, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected 0 (all cores) or more threads, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from . import bench, export, metrics, oneclass, photos, report, synth, train

    fmt = HelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m bvae_tools",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module, help_text in (
        ("train", train, "train a β-VAE; writes checkpoint.pt, log.csv, config.json"),
        ("export", export, "export NAME.onnx, NAME.decoder.onnx and the golden fixture"),
        ("report", report, "draw loss curves, per-latent KL, reconstructions, traversals"),
        ("synth", synth, "write a folder of synthetic camera frames (for demos and tests)"),
        ("photos", photos, "write scikit-image's bundled photographs for bvae's photos source"),
        ("bench", bench, "time bvae (tract) against onnxruntime on the same model"),
        ("oneclass", oneclass, "one-class AUROC of every score on Fashion-MNIST (IDX)"),
        ("metrics", metrics, "disentanglement metrics (Higgins, FactorVAE, MIG, DCI) on dSprites"),
    ):
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=fmt)
        module.add_arguments(p)
        if name != "bench":  # bench has its own --threads (a list)
            p.add_argument(
                "--threads", type=_threads, default=0, help="torch CPU threads (0 = all cores)"
            )
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import torch

        if getattr(args, "threads", 0):
            torch.set_num_threads(args.threads)
        return args.run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
