"""``export``: checkpoint -> ``NAME.onnx``, ``NAME.decoder.onnx`` and ``NAME.golden/``.

The contract (``shared/DESIGN.md``):

- ``NAME.onnx``: input ``image`` float32 ``[N, C, H, W]`` (N dynamic) in [0, 1];
  outputs ``mu`` ``[N, Z]``, ``logvar`` ``[N, Z]``, ``recon`` ``[N, C, H, W]`` =
  ``sigmoid(decoder(mu))``.
- ``NAME.decoder.onnx``: input ``z`` ``[N, Z]`` -> output ``recon``.
- ``bvae.*`` metadata_props (strings) on both files.

After writing, each file goes through ``onnx.checker`` and onnxruntime is
compared with PyTorch on real inputs (rtol 1e-3, atol 1e-5); any mismatch
fails the export. The golden fixture holds ``.npy`` files (float32, C order)
that the Rust tests read without Python.

The decoder's transposed convolutions are exported as ``ConvTranspose``,
which bvae runs with its own kernel and onnxruntime runs well. ``--subpixel``
writes the stride-2 ones as sub-pixel convolutions instead
(:class:`SubPixelConvTranspose2d`: one 2×2 convolution to 4·C_out channels,
four shifted slices and a depth-to-space), the same function in a form that
plain tract runs faster than its own transposed convolution; both bvae and
onnxruntime are slower on it (README, "Performance"). The golden outputs are
always those of the original PyTorch model.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from . import FORMAT_VERSION
from .checkpoint import TrainConfig, load_checkpoint, resolve_checkpoint
from .data import open_source, split_indices
from .errors import UserError
from .model import BetaVAE, ExportedDecoder, ExportedEncoder
from .subpixel import subpixel_decoder
from .train import mean_latent_kl

EXPORTERS = ("torchscript", "dynamo")
#: Opset of the TorchScript exporter (the default).
TORCHSCRIPT_OPSET = 17
#: Opset of the dynamo exporter (its lowest supported opset).
DYNAMO_OPSET = 18
#: Parity tolerance between onnxruntime and PyTorch.
RTOL, ATOL = 1e-3, 1e-5
#: With --external-data, tensors of at least this many bytes (the weights) go to
#: NAME.onnx.data; small ones (shape constants) stay inline so shape inference works.
EXTERNAL_MIN_BYTES = 1024
#: Number of real images in the golden fixture.
GOLDEN_N = 4
ENCODER_OUTPUTS = ("mu", "logvar", "recon")


class ExportError(UserError):
    """The exported model is wrong (checker or parity failure)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="run directory of `train` (or its checkpoint.pt)")
    p.add_argument(
        "--out",
        required=True,
        help="path of the model, NAME.onnx; NAME.decoder.onnx and NAME.golden/ "
        "are written next to it",
    )
    p.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default="torchscript",
        help="torch.onnx exporter: torchscript (dynamo=False, opset "
        f"{TORCHSCRIPT_OPSET}) or dynamo (dynamo=True, opset {DYNAMO_OPSET})",
    )
    p.add_argument("--opset", type=int, default=0, help="ONNX opset (0 = the exporter's default)")
    p.add_argument(
        "--external-data",
        action="store_true",
        help="store weights in NAME.onnx.data (and NAME.decoder.onnx.data)",
    )
    p.add_argument(
        "--kl-samples",
        type=int,
        default=4096,
        help="training images used to measure the per-latent KL (bvae.latent_kl)",
    )
    p.add_argument(
        "--parity-samples",
        type=int,
        default=16,
        help="real images on which onnxruntime is compared with PyTorch",
    )
    p.add_argument("--no-golden", action="store_true", help="do not write NAME.golden/")
    p.add_argument(
        "--latent-names",
        default=None,
        metavar="NAMES",
        help="name the latents after the factors they follow, comma-separated, one per "
        "latent, empty where none (e.g. x,y,,size); stored as bvae.latent_names and shown "
        "by bvae info, the events and the window. `metrics` suggests names for dSprites",
    )
    p.add_argument(
        "--subpixel",
        action="store_true",
        help="export the decoder's stride-2 transposed convolutions as the equivalent "
        "sub-pixel convolutions (Conv + Slice + DepthToSpace) instead of ConvTranspose: "
        "faster in plain tract, slower in bvae and onnxruntime",
    )


def model_name(out: Path) -> str:
    if out.suffix != ".onnx":
        raise UserError(f"--out must end in .onnx (e.g. models/NAME.onnx), got {out}")
    return out.name[: -len(".onnx")]


#: Longest latent name (the runtime's ``MAX_LATENT_NAME``).
MAX_LATENT_NAME = 32


def parse_latent_names(text: str, latent_dim: int) -> list[str]:
    """``x,y,,size`` -> ``["x", "y", "", "size"]``: one name per latent, each
    at most ``MAX_LATENT_NAME`` characters without control characters."""
    return check_latent_names([n.strip() for n in text.split(",")], latent_dim)


def check_latent_names(names: list[str], latent_dim: int) -> list[str]:
    """``names`` if there is one per latent and each fits the runtime."""
    if len(names) != latent_dim:
        raise UserError(
            f"--latent-names has {len(names)} names but the model has {latent_dim} latents "
            "(one per latent, empty where none: e.g. x,y,,size)"
        )
    for n in names:
        if len(n) > MAX_LATENT_NAME or any(ord(c) < 32 or ord(c) == 127 for c in n):
            raise UserError(
                f"latent name {n!r}: at most {MAX_LATENT_NAME} characters, no control characters"
            )
    return names


def metadata(
    cfg: TrainConfig,
    steps: int,
    latent_kl: np.ndarray,
    illumination_mean: float | None = None,
    latent_names: list[str] | None = None,
) -> dict[str, str]:
    """The ``bvae.*`` metadata_props, all strings; ``illumination_mean`` is the
    target of gain normalisation when the data has ``illumination == "gain"``;
    ``latent_names`` (one per latent, ``""`` where none) become
    ``bvae.latent_names``."""
    meta = {
        "bvae.format": FORMAT_VERSION,
        "bvae.latent_dim": str(cfg.model.latent_dim),
        "bvae.channels": str(cfg.model.channels),
        "bvae.height": str(cfg.model.size),
        "bvae.width": str(cfg.model.size),
        "bvae.likelihood": cfg.loss.likelihood,
        "bvae.objective": cfg.loss.objective,
        "bvae.beta": repr(float(cfg.loss.beta)),
        "bvae.gamma": repr(float(cfg.loss.gamma)),
        "bvae.capacity_max": repr(float(cfg.loss.capacity_max)),
        "bvae.latent_kl": json.dumps([round(float(v), 6) for v in latent_kl]),
        "bvae.dataset": cfg.data.describe(),
        "bvae.fit": cfg.data.fit,
        "bvae.steps": str(int(steps)),
        "bvae.seed": str(int(cfg.seed)),
    }
    if latent_names is not None:
        meta["bvae.latent_names"] = json.dumps(
            check_latent_names(list(latent_names), cfg.model.latent_dim)
        )
    if cfg.data.tiles:
        meta["bvae.tiles"] = cfg.data.tiles
    if cfg.data.illumination == "gain":
        if illumination_mean is None:
            raise UserError("a gain-normalised model needs the mean it normalises to")
        meta["bvae.illumination"] = "gain"
        meta["bvae.illumination_mean"] = repr(float(illumination_mean))
    return meta


def _to_proto(
    module: torch.nn.Module,
    example: torch.Tensor,
    input_name: str,
    output_names: tuple[str, ...],
    exporter: str,
    opset: int,
) -> onnx.ModelProto:
    try:
        return _export_proto(module, example, input_name, output_names, exporter, opset)
    except Exception as e:  # the exporters raise many types; report them all the same way
        raise ExportError(
            f"torch.onnx.export ({exporter} exporter, opset {opset}) failed: "
            f"{type(e).__name__}: {e}"
        ) from None


def _export_proto(
    module: torch.nn.Module,
    example: torch.Tensor,
    input_name: str,
    output_names: tuple[str, ...],
    exporter: str,
    opset: int,
) -> onnx.ModelProto:
    module.eval()
    # The dynamo exporter logs one warning per missing torchvision op; not our concern.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            buf = io.BytesIO()
            axes = {name: {0: "N"} for name in (input_name, *output_names)}
            torch.onnx.export(
                module,
                (example,),
                buf,
                dynamo=False,
                opset_version=opset,
                input_names=[input_name],
                output_names=list(output_names),
                dynamic_axes=axes,
                do_constant_folding=True,
            )
            return onnx.load_from_string(buf.getvalue())
        prog = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_shapes=({0: torch.export.Dim("N")},),
            external_data=False,
            verbose=False,
        )
        return prog.model_proto


def _declare_shapes(proto: onnx.ModelProto, shapes: dict[str, tuple]) -> None:
    """Write the contract's shapes on the graph inputs and outputs: batch ``N``,
    the rest concrete (the TorchScript exporter leaves ``recon``'s H and W symbolic)."""
    for vi in (*proto.graph.input, *proto.graph.output):
        if vi.name not in shapes:
            continue
        shape = vi.type.tensor_type.shape
        del shape.dim[:]
        for d in shapes[vi.name]:
            dim = shape.dim.add()
            if isinstance(d, str):
                dim.dim_param = d
            else:
                dim.dim_value = d


def _save(
    proto: onnx.ModelProto, path: Path, meta: dict[str, str], external: bool, doc: str
) -> None:
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string = doc
    proto.producer_name = "bvae_tools"
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    if external:
        onnx.save_model(
            proto,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data.name,
            size_threshold=EXTERNAL_MIN_BYTES,
        )
        data.chmod(0o644)
    else:
        onnx.save_model(proto, str(path))


def check_contract(path: Path, input_name: str, output_names: tuple[str, ...]) -> None:
    """onnx.checker plus the names and dynamic batch dimension of the contract."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"{path} fails onnx.checker: {e}") from None
    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = [i.name for i in graph.input]
    outputs = tuple(o.name for o in graph.output)
    if inputs != [input_name] or outputs != output_names:
        raise ExportError(
            f"{path}: inputs {inputs} / outputs {outputs}, expected [{input_name}] / {output_names}"
        )
    if not graph.input[0].type.tensor_type.shape.dim[0].dim_param:
        raise ExportError(f"{path}: the batch dimension of {input_name} is not dynamic")


def _session(path: Path, threads: int | None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def check_parity(
    path: Path,
    feed_name: str,
    inputs: np.ndarray,
    expected: dict[str, np.ndarray],
    threads: int | None,
) -> None:
    """Run onnxruntime on ``inputs`` (all at once, and the first alone, which
    exercises the dynamic batch) and compare with PyTorch's ``expected``."""
    sess = _session(path, threads)
    names = list(expected)
    for batch in (inputs, inputs[:1]):
        got = sess.run(names, {feed_name: batch})
        for name, g in zip(names, got, strict=True):
            want = expected[name][: len(batch)]
            try:
                np.testing.assert_allclose(g, want, rtol=RTOL, atol=ATOL)
            except AssertionError as e:
                raise ExportError(
                    f"{path}: onnxruntime output {name!r} (batch {len(batch)}) differs from "
                    f"PyTorch beyond rtol={RTOL}, atol={ATOL}:{e}"
                ) from None


def _npy(path: Path, arr: np.ndarray) -> None:
    np.save(path, np.ascontiguousarray(arr, dtype="<f4"), allow_pickle=False)


def golden_latents(mu: np.ndarray) -> np.ndarray:
    """Latents for the decoder fixture: mu plus offsets of -1, 0, +1 in a fixed pattern."""
    n, z = mu.shape
    offsets = ((np.arange(n)[:, None] + np.arange(z)[None, :]) % 3 - 1).astype(np.float32)
    return mu + offsets


def export(
    checkpoint: str | Path,
    out: Path,
    exporter: str = "torchscript",
    opset: int = 0,
    external_data: bool = False,
    kl_samples: int = 4096,
    parity_samples: int = 16,
    golden: bool = True,
    threads: int | None = None,
    subpixel: bool = False,
    latent_names: str | None = None,
) -> dict:
    """Export, verify and write the fixture. Returns a summary dict.
    ``latent_names`` is ``--latent-names`` (``x,y,,size``)."""
    if exporter not in EXPORTERS:
        raise UserError(f"--exporter must be one of {EXPORTERS}, got {exporter!r}")
    if kl_samples < 1 or parity_samples < GOLDEN_N:
        raise UserError(f"--kl-samples must be >= 1 and --parity-samples >= {GOLDEN_N}")
    name = model_name(out)
    opset = opset or (TORCHSCRIPT_OPSET if exporter == "torchscript" else DYNAMO_OPSET)
    if exporter == "dynamo" and opset < DYNAMO_OPSET:
        raise UserError(f"the dynamo exporter needs opset >= {DYNAMO_OPSET}, got {opset}")
    model, cfg, state = load_checkpoint(checkpoint)
    model: BetaVAE
    names = None if latent_names is None else parse_latent_names(latent_names, cfg.model.latent_dim)
    source = open_source(
        cfg.data, cfg.model.size, cfg.model.channels, cache=resolve_checkpoint(checkpoint).parent
    )
    train_idx, hold_idx = split_indices(len(source), cfg.holdout, cfg.seed)
    rng = np.random.default_rng([cfg.seed, 11])
    kl_idx = np.sort(rng.choice(train_idx, size=min(kl_samples, len(train_idx)), replace=False))
    latent_kl = mean_latent_kl(model, source, kl_idx)
    pool = hold_idx if len(hold_idx) >= GOLDEN_N else train_idx
    parity_idx = rng.choice(pool, size=min(parity_samples, len(pool)), replace=False)
    images = source.batch(parity_idx).numpy()
    # the exported weights are the best epoch's (early stopping), not the last
    steps = (state.get("best") or {}).get("step", state["step"])
    meta = metadata(cfg, steps, latent_kl, getattr(source, "target", None), names)

    # The reference outputs (golden fixture, parity) always come from the
    # trained model itself; the graph written may be an equivalent rewrite.
    enc, dec = ExportedEncoder(model).eval(), ExportedDecoder(model).eval()
    with torch.no_grad():
        x = torch.from_numpy(images)
        mu, logvar, recon = (t.numpy() for t in enc(x))
        z = golden_latents(mu)
        dec_recon = dec(torch.from_numpy(z)).numpy()
    if subpixel:
        fast = subpixel_decoder(model)
        enc, dec = ExportedEncoder(fast).eval(), ExportedDecoder(fast).eval()

    out.parent.mkdir(parents=True, exist_ok=True)
    dec_path = out.with_name(f"{name}.decoder.onnx")
    doc = (
        f"bvae β-VAE exported by bvae_tools with the {exporter} exporter, opset {opset}; "
        "see bvae.* metadata_props"
    )
    c, h, w, zdim = cfg.model.channels, cfg.model.size, cfg.model.size, cfg.model.latent_dim
    image_shape = ("N", c, h, w)
    enc_proto = _to_proto(enc, x[:2].clone(), "image", ENCODER_OUTPUTS, exporter, opset)
    _declare_shapes(
        enc_proto,
        {"image": image_shape, "mu": ("N", zdim), "logvar": ("N", zdim), "recon": image_shape},
    )
    _save(enc_proto, out, meta, external_data, doc)
    dec_proto = _to_proto(dec, torch.from_numpy(z[:2]).clone(), "z", ("recon",), exporter, opset)
    _declare_shapes(dec_proto, {"z": ("N", zdim), "recon": image_shape})
    _save(dec_proto, dec_path, meta, external_data, doc)

    try:
        check_contract(out, "image", ENCODER_OUTPUTS)
        check_contract(dec_path, "z", ("recon",))
        check_parity(out, "image", images, {"mu": mu, "logvar": logvar, "recon": recon}, threads)
        check_parity(dec_path, "z", z, {"recon": dec_recon}, threads)
    except ExportError as e:
        # never leave a model that failed its checks where the runtime would load it
        for path in (out, dec_path):
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".data").unlink(missing_ok=True)
        raise ExportError(f"{e}\n(the exported files were removed)") from None

    golden_dir = out.with_name(f"{name}.golden")
    if golden:
        golden_dir.mkdir(exist_ok=True)
        n = GOLDEN_N
        for fname, arr in (
            ("image", images[:n]),
            ("mu", mu[:n]),
            ("logvar", logvar[:n]),
            ("recon", recon[:n]),
            ("z", z[:n]),
            ("decoder_recon", dec_recon[:n]),
        ):
            _npy(golden_dir / f"{fname}.npy", arr)
        manifest = {"model": out.name, "decoder": dec_path.name, "torch": torch.__version__, "n": n}
        (golden_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    ops = sorted({n.op_type for n in onnx.load(str(out), load_external_data=False).graph.node})
    return {
        "model": out,
        "decoder": dec_path,
        "golden": golden_dir if golden else None,
        "opset": opset,
        "ops": ops,
        "subpixel": subpixel,
        "latent_kl": latent_kl.tolist(),
        "metadata": meta,
    }


def run(args: argparse.Namespace) -> int:
    s = export(
        args.checkpoint,
        Path(args.out),
        args.exporter,
        args.opset,
        args.external_data,
        args.kl_samples,
        args.parity_samples,
        not args.no_golden,
        args.threads,
        args.subpixel,
        args.latent_names,
    )
    print(f"wrote {s['model']} and {s['decoder']} (opset {s['opset']}; ops: {', '.join(s['ops'])})")
    if s["golden"]:
        print(f"wrote golden fixture {s['golden']}/")
    print(f"onnx.checker passed; onnxruntime matches PyTorch (rtol {RTOL}, atol {ATOL})")
    print("latent KL (nats): " + ", ".join(f"z{j}={v:.3f}" for j, v in enumerate(s["latent_kl"])))
    return 0
