"""`TfjsGraph`: a TensorFlow.js graph model (``model.json`` + weight shards) run with torch ops.

A graph model is a frozen TensorFlow GraphDef written as JSON (``modelTopology.node``: name, op,
inputs, attributes) with its constants in binary shards (``weightsManifest``: names, shapes, dtypes
and an optional quantisation: float16, or uint8/uint16 with a scale and minimum). No TensorFlow is
needed to run one: the nodes come in topological order, and each op here maps to a torch call. Values
keep TensorFlow's layout (NHWC activations, HWIO kernels). Pointwise convolutions (1x1, stride 1: most
of MoveNet's arithmetic) are matrix products on the NHWC values; the others run on their NCHW view,
which is channels-last in memory, so nothing is reordered. Against permuting and padding every
convolution's input, MoveNet Thunder on a 2-core CPU: 1.5-1.8x faster on a random 256x256 input, 1.2-1.35x
on real person crops (whose black borders make subnormal floats that slow the matrix products); the
outputs equal to float rounding (README, "Speed on CPU and GPU").

Only the ops in `SUPPORTED_OPS` are run: a graph with any other op, a damaged manifest or shards of the
wrong size is refused at load with a `TfjsGraphError` that names the file and what is wrong. TF's
"SAME" padding is asymmetric for even kernels and strides (the extra row and column go after), and is
reproduced exactly, and so is TF's legacy bilinear resizing (neither half-pixel centres nor aligned
corners: output pixel i samples input i x in / out); "EXPLICIT" padding is refused, as no graph used here
has it. A graph loaded for named ``outputs`` keeps only the nodes they need, so the ops of a detector's
decoding tail (top-k, gathers), decoded by the caller instead, need not be supported; and each run computes
only the nodes of the outputs it is asked for (MoveNet's person-centre heatmap alone: 1.13x faster on real tiles).
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SUPPORTED_OPS", "TfjsGraph", "TfjsGraphError"]

_CONVS = ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative")
SUPPORTED_OPS = frozenset({
    "Const", "Placeholder", "Identity", "Cast", "Unpack", "Pack", "ExpandDims", "Squeeze", "Reshape",
    "ConcatV2", "GatherNd", "ArgMax", "Add", "AddV2", "Sub", "Mul", "RealDiv", "FloorDiv", "SquaredDifference",
    "Sqrt", "Sigmoid", "Relu", "Relu6", "Mean", "ResizeBilinear", *_CONVS,
})  # fmt: skip
_DTYPES = {"float32": np.float32, "int32": np.int32, "float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}
_TF_DTYPES = {"DT_FLOAT": torch.float32, "DT_INT32": torch.int32}
MAX_MANIFEST_BYTES = 64 << 20  # a graph's JSON (MoveNet Thunder's: 160 KB)
MAX_WEIGHT_BYTES = 1 << 30


class TfjsGraphError(ValueError):
    """A file that is not a TensorFlow.js graph model this module can run (the message names it)."""


def _text(attr: Mapping[str, Any], key: str, default: str | None = None) -> str:
    if key not in attr and default is not None:
        return default
    return base64.b64decode(attr[key]["s"]).decode()


def _ints(attr: Mapping[str, Any], key: str, default: Sequence[int] = ()) -> list[int]:
    if key not in attr:
        return list(default)
    return [int(i) for i in attr[key].get("list", {}).get("i", [])]


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF's SAME padding along one axis: (before, after), the odd pixel after."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _read_weights(path: Path, manifest: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The named constants of the weight shards, dequantised to float32 where quantised."""
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        shards = [path.parent / str(p) for p in group["paths"]]
        for shard in shards:
            if shard.parent.resolve() != path.parent.resolve():
                raise TfjsGraphError(f"{path}: weight shard {shard.name!r} is outside the model's folder")
            if not shard.is_file():
                raise TfjsGraphError(f"{path}: weight shard {shard} is missing")
        sizes = [shard.stat().st_size for shard in shards]
        if sum(sizes) > MAX_WEIGHT_BYTES:
            raise TfjsGraphError(f"{path}: weight shards of {sum(sizes)} bytes (at most {MAX_WEIGHT_BYTES})")
        blob = b"".join(shard.read_bytes() for shard in shards)
        offset = 0
        for weight in group["weights"]:
            quant = weight.get("quantization")
            stored = quant["dtype"] if quant else weight["dtype"]
            if stored not in _DTYPES or weight["dtype"] not in ("float32", "int32"):
                raise TfjsGraphError(f"{path}: weight {weight['name']!r} has dtype {stored!r}, not one of {sorted(_DTYPES)}")
            shape = [int(d) for d in weight["shape"]]
            if any(d < 0 for d in shape):
                raise TfjsGraphError(f"{path}: weight {weight['name']!r} has shape {shape}")
            count = math.prod(shape)  # Python ints: a huge shape cannot wrap around
            size = count * np.dtype(_DTYPES[stored]).itemsize
            if offset + size > len(blob):
                raise TfjsGraphError(f"{path}: the weight shards end inside {weight['name']!r} ({len(blob)} bytes)")
            arr = np.frombuffer(blob, _DTYPES[stored], count, offset).reshape(shape)
            offset += size
            if quant and stored == "float16":
                arr = arr.astype(np.float32)
            elif quant:
                arr = arr.astype(np.float32) * float(quant["scale"]) + float(quant["min"])
            out[str(weight["name"])] = arr.astype(np.int32 if weight["dtype"] == "int32" else np.float32)
        if offset != len(blob):
            raise TfjsGraphError(f"{path}: the weight shards hold {len(blob)} bytes, the manifest names {offset}")
    return out


class TfjsGraph:
    """A loaded graph model on a device; `run` feeds its placeholders and returns the named outputs.

    ``placeholders`` names its inputs.

    Args:
        path: the graph's ``model.json`` (its weight shards beside it, as the manifest names them).
        device: where the constants live and the ops run.
        outputs: where given, the only nodes `run` may be asked for: the others are dropped at load
            (and their ops need not be supported).

    Raises:
        TfjsGraphError: not a graph model, ops outside `SUPPORTED_OPS`, missing or short shards.
        OSError: the file cannot be read.
    """

    def __init__(self, path: str | os.PathLike[str], device: str | torch.device = "cpu",
                 outputs: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        self.device = torch.device(device)
        if self.path.stat().st_size > MAX_MANIFEST_BYTES:
            raise TfjsGraphError(f"{self.path}: {self.path.stat().st_size} bytes, too large for a graph model's JSON")
        try:
            doc = json.loads(self.path.read_bytes())
            nodes = doc["modelTopology"]["node"]
            manifest = doc["weightsManifest"]
            if doc.get("format", "graph-model") != "graph-model" or not isinstance(nodes, list):
                raise TypeError(f"format {doc.get('format')!r}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TfjsGraphError(f"{self.path}: not a TensorFlow.js graph model ({type(exc).__name__}: {exc})") from exc
        try:
            if outputs is not None:
                nodes = _needed(nodes, outputs, self.path)
            self._check_graph(nodes)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            if isinstance(exc, TfjsGraphError):
                raise
            raise TfjsGraphError(f"{self.path}: damaged graph ({type(exc).__name__}: {exc})") from exc
        try:
            arrays = _read_weights(self.path, manifest)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            if isinstance(exc, TfjsGraphError):
                raise
            raise TfjsGraphError(f"{self.path}: damaged weights manifest ({type(exc).__name__}: {exc})") from exc
        self.nodes: list[dict[str, Any]] = nodes
        self.placeholders = [n["name"] for n in nodes if n["op"] == "Placeholder"]
        self.consts: dict[str, torch.Tensor] = {}
        for node in nodes:
            if node["op"] == "Const":
                if node["name"] not in arrays:
                    raise TfjsGraphError(f"{self.path}: constant {node['name']!r} is not in the weight shards")
                self.consts[node["name"]] = torch.from_numpy(arrays[node["name"]]).to(self.device)  # astype made it writable
        self._kernels: dict[str, torch.Tensor] = {}  # convolution weights in torch's layout, made once
        self._names = {str(node["name"]) for node in nodes}
        self._plans: dict[frozenset[str], list[dict[str, Any]]] = {}  # `_plan`'s, per set of outputs

    def _check_graph(self, nodes: list[Any]) -> None:
        """Ops this runner has, every input made before it is read, attributes it can follow."""
        unsupported = sorted({str(n.get("op")) for n in nodes} - SUPPORTED_OPS)
        if unsupported:
            raise TfjsGraphError(f"{self.path}: the graph uses ops this runner does not have: {', '.join(unsupported)}")
        seen: set[str] = set()
        for node in nodes:  # inputs come first: the nodes are run in this order
            later = [i for i in node.get("input", []) if i.lstrip("^").split(":")[0] not in seen]
            if later:
                raise TfjsGraphError(f"{self.path}: node {node.get('name')!r} reads {later[0]!r} before it is made")
            self._check_node(node)
            seen.add(str(node["name"]))

    def _check_node(self, node: Mapping[str, Any]) -> None:
        attr = node.get("attr", {})
        if node["op"] in _CONVS and _text(attr, "padding") not in ("SAME", "VALID"):
            raise TfjsGraphError(f"{self.path}: {node['name']}: padding {_text(attr, 'padding')!r} is not supported")
        if node["op"] in _CONVS and _text(attr, "data_format", "NHWC") != "NHWC":
            raise TfjsGraphError(f"{self.path}: {node['name']}: only NHWC convolutions are supported")
        if node["op"] == "ResizeBilinear":
            half = attr.get("half_pixel_centers", {}).get("b", False)
            corners = attr.get("align_corners", {}).get("b", False)
            if half and corners:
                raise TfjsGraphError(f"{self.path}: {node['name']}: bilinear resizing with both half-pixel "
                                     "centres and aligned corners")
        for fused in self._fused(node):
            if fused not in ("BiasAdd", "Relu", "Relu6"):
                raise TfjsGraphError(f"{self.path}: {node['name']}: fused op {fused!r} is not supported")

    @staticmethod
    def _fused(node: Mapping[str, Any]) -> list[str]:
        entries = node.get("attr", {}).get("fused_ops", {}).get("list", {}).get("s", [])
        return [base64.b64decode(s).decode() for s in entries]

    def run(self, feeds: Mapping[str, torch.Tensor], outputs: Sequence[str]) -> list[torch.Tensor]:
        """The values of `outputs` (node names, ``name:k`` for a node's k-th output) for the given placeholders.

        Raises:
            ValueError: a placeholder without a value, or an output the graph does not have.
        """
        missing = [name for name in self.placeholders if name not in feeds]
        if missing:
            raise ValueError(f"no value for the graph's input(s) {', '.join(missing)}")
        unknown = [name for name in outputs if name.split(":")[0] not in self._names]
        if unknown:
            raise ValueError(f"the graph has no output(s) {', '.join(unknown)}")
        values: dict[str, Any] = {name: feeds[name].to(self.device) for name in self.placeholders}
        values.update(self.consts)
        with torch.inference_mode():
            for node in self._plan(outputs):
                if node["op"] in ("Const", "Placeholder"):
                    continue
                args = [self._input(values, name) for name in node.get("input", []) if not name.startswith("^")]
                values[node["name"]] = self._op(node, args)
            return [self._input(values, name) for name in outputs]

    def _plan(self, outputs: Sequence[str]) -> list[dict[str, Any]]:
        """The nodes `outputs` need, in graph order, found once per set of outputs: a run asked for an early
        output (MoveNet's person-centre heatmap) skips the heads and decoding only the others need."""
        key = frozenset(name.split(":")[0] for name in outputs)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _needed(self.nodes, sorted(key), self.path)
        return plan

    @staticmethod
    def _input(values: Mapping[str, Any], name: str) -> torch.Tensor:
        base, _, index = name.partition(":")
        value = values[base]
        if isinstance(value, list):  # a multi-output op (Unpack): "name" is its first output
            return value[int(index or 0)]
        return value

    def _kernel(self, node: Mapping[str, Any], weight: torch.Tensor, depthwise: bool) -> torch.Tensor:
        """The node's kernel in the layout its torch call takes, made once: (I, O) for a pointwise
        convolution (a matrix product on NHWC), else torch's (O, I / groups, kh, kw)."""
        kernel = self._kernels.get(node["name"])
        if kernel is None:
            kh, kw = weight.shape[:2]
            if depthwise:  # (kh, kw, C, M) -> (C * M, 1, kh, kw)
                c, m = weight.shape[2:]
                kernel = weight.permute(2, 3, 0, 1).reshape(c * m, 1, kh, kw).contiguous()
            elif _pointwise(node, weight, depthwise):  # (1, 1, I, O) -> (I, O)
                kernel = weight.reshape(weight.shape[2:]).contiguous()
            else:  # (kh, kw, I, O) -> (O, I, kh, kw)
                kernel = weight.permute(3, 2, 0, 1).contiguous()
            self._kernels[node["name"]] = kernel
        return kernel

    def _conv(self, node: Mapping[str, Any], args: list[torch.Tensor]) -> torch.Tensor:
        """A convolution on NHWC values. A pointwise one (1x1, stride 1) is a matrix product on the
        NHWC values as they are; the others run on the NCHW view (channels-last in memory), with
        SAME padding passed to the convolution where it is even on both sides and padded first
        where TF puts the odd pixel after."""
        attr = node.get("attr", {})
        depthwise = "Depthwise" in node["op"]
        fused = self._fused(node)
        bias = args[2] if "BiasAdd" in fused else None
        kernel = self._kernel(node, args[1], depthwise)
        if _pointwise(node, args[1], depthwise):
            x = args[0].float()
            flat = x.reshape(-1, x.shape[-1])
            y = torch.addmm(bias, flat, kernel) if bias is not None else flat @ kernel
            y = y.reshape(*x.shape[:-1], kernel.shape[1])
        else:
            x = args[0].float()
            stride = _ints(attr, "strides", (1, 1, 1, 1))[1:3]
            dilation = _ints(attr, "dilations", (1, 1, 1, 1))[1:3]
            kh, kw = kernel.shape[2:]
            padding = (0, 0)
            if _text(attr, "padding") == "SAME":
                top, bottom = _same_pad(x.shape[1], kh, stride[0], dilation[0])
                left, right = _same_pad(x.shape[2], kw, stride[1], dilation[1])
                if top == bottom and left == right:
                    padding = (top, left)
                else:  # on the NHWC values: a plain copy, where padding the NCHW view reorders memory
                    x = F.pad(x, (0, 0, left, right, top, bottom))
            y = F.conv2d(x.permute(0, 3, 1, 2), kernel, bias, stride=stride, padding=padding, dilation=dilation,
                         groups=x.shape[3] if depthwise else 1).permute(0, 2, 3, 1)
        if "Relu" in fused:
            y = y.relu_()
        if "Relu6" in fused:
            y = y.clamp_(0.0, 6.0)
        return y

    def _op(self, node: Mapping[str, Any], args: list[torch.Tensor]) -> Any:
        op, attr = node["op"], node.get("attr", {})
        if op in _CONVS:
            return self._conv(node, args)
        fn = _ELEMENTWISE.get(op)
        if fn is not None:
            return fn(*args)
        if op == "Cast":
            return args[0].to(_TF_DTYPES[attr["DstT"]["type"]])
        if op == "Unpack":
            return list(torch.unbind(args[0], int(attr.get("axis", {}).get("i", 0))))
        if op == "Pack":
            return torch.stack(args, int(attr.get("axis", {}).get("i", 0)))
        if op == "ExpandDims":
            return args[0].unsqueeze(int(args[1].reshape(-1)[0]))
        if op == "Squeeze":
            dims = _ints(attr, "squeeze_dims")
            return args[0].squeeze(tuple(dims)) if dims else args[0].squeeze()
        if op == "Reshape":
            return args[0].reshape([int(v) for v in args[1].reshape(-1).tolist()])
        if op == "ConcatV2":
            return torch.cat(args[:-1], int(args[-1].reshape(-1)[0]))
        if op == "GatherNd":
            index = args[1].long()
            return args[0][tuple(index.unbind(-1))]
        if op == "ArgMax":
            return torch.argmax(args[0], int(args[1].reshape(-1)[0])).to(torch.int32)
        if op == "Mean":
            dims = tuple(int(v) for v in args[1].reshape(-1).tolist())
            return args[0].float().mean(dims, keepdim=bool(attr.get("keep_dims", {}).get("b", False)))
        if op == "ResizeBilinear":
            size = [int(v) for v in args[1].reshape(-1).tolist()]
            corners = bool(attr.get("align_corners", {}).get("b", False))
            if not corners and not attr.get("half_pixel_centers", {}).get("b", False):
                return _resize_legacy(args[0].float(), size)
            x = args[0].float().permute(0, 3, 1, 2)
            return F.interpolate(x, size=size, mode="bilinear", align_corners=corners).permute(0, 2, 3, 1)
        raise AssertionError(f"op {op} passed the load check but has no implementation")  # pragma: no cover


def _pointwise(node: Mapping[str, Any], weight: torch.Tensor, depthwise: bool) -> bool:
    """A 1x1 convolution of stride 1 that is not depthwise: a matrix product over the channels."""
    strides = _ints(node.get("attr", {}), "strides", (1, 1, 1, 1))[1:3]
    return not depthwise and tuple(weight.shape[:2]) == (1, 1) and strides == [1, 1]


def _needed(nodes: list[Any], outputs: Sequence[str], path: Path) -> list[Any]:
    """The nodes `outputs` are computed from, in graph order.

    Raises:
        TfjsGraphError: an output the graph does not have.
    """
    by_name = {str(node["name"]): node for node in nodes}
    keep: set[str] = set()
    stack = [name.split(":")[0] for name in outputs]
    while stack:
        name = stack.pop()
        if name in keep:
            continue
        if name not in by_name:
            raise TfjsGraphError(f"{path}: the graph has no node {name!r}")
        keep.add(name)
        stack.extend(i.lstrip("^").split(":")[0] for i in by_name[name].get("input", []))
    return [node for node in nodes if node["name"] in keep]


def _resize_legacy(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """TF's bilinear resize of NHWC values with neither half-pixel centres nor aligned corners: output
    pixel i reads input position i x in / out, the last row and column repeated past the edge."""
    for axis, out in ((1, size[0]), (2, size[1])):
        n = x.shape[axis]
        pos = torch.arange(out, device=x.device, dtype=torch.float32) * (n / out)
        lo = pos.floor().long().clamp_(max=n - 1)
        hi = (lo + 1).clamp_(max=n - 1)
        shape = [1, 1, 1, 1]
        shape[axis] = out
        frac = (pos - lo).reshape(shape)
        x = x.index_select(axis, lo) * (1 - frac) + x.index_select(axis, hi) * frac
    return x


def _floor_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.div(a, b, rounding_mode="floor")


_ELEMENTWISE: dict[str, Callable[..., torch.Tensor]] = {
    "Identity": lambda x: x,
    "Add": torch.add,
    "AddV2": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "RealDiv": torch.div,
    "FloorDiv": _floor_div,
    "SquaredDifference": lambda a, b: (a - b) ** 2,
    "Sqrt": torch.sqrt,
    "Sigmoid": torch.sigmoid,
    "Relu": F.relu,
    "Relu6": F.relu6,
}
