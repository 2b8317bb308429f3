"""bvae_tools: train a β-VAE in PyTorch and export it to the bvae ONNX contract.

Run from the ``tools/`` directory as ``python -m bvae_tools {train,export,report}``.
"""

__version__ = "0.1.0"

#: Version of the ONNX contract written into ``bvae.format``.
FORMAT_VERSION = "1"
