"""TfjsGraph on graph models the tests write (JSON + binary shard), checked against plain numpy arithmetic."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model.nets.tfjs_graph import TfjsGraph, TfjsGraphError


def _s(text: str) -> dict[str, str]:
    return {"s": base64.b64encode(text.encode()).decode()}


def _conv_attr(stride: int, padding: str, fused: tuple[str, ...]) -> dict[str, Any]:
    return {"strides": {"list": {"i": ["1", str(stride), str(stride), "1"]}}, "padding": _s(padding),
            "data_format": _s("NHWC"), "fused_ops": {"list": {"s": [_s(f)["s"] for f in fused]}}}  # fmt: skip


def _write(tmp_path: Path, nodes: list[dict[str, Any]], consts: dict[str, tuple[np.ndarray, str | None]],
           name: str = "g") -> Path:  # fmt: skip
    """A graph model: `consts` {name: (array, quantisation dtype or None)} in one shard."""
    blob, weights = b"", []
    for key, (arr, quant) in consts.items():
        entry: dict[str, Any] = {"name": key, "shape": list(arr.shape),
                                 "dtype": "int32" if arr.dtype == np.int32 else "float32"}  # fmt: skip
        if quant == "float16":
            entry["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
            blob += arr.astype(np.float16).tobytes()
        elif quant == "uint8":
            lo, scale = float(arr.min()), float(arr.max() - arr.min()) / 255
            entry["quantization"] = {"dtype": "uint8", "min": lo, "scale": scale}
            blob += np.round((arr - lo) / scale).astype(np.uint8).tobytes()
        else:
            blob += arr.tobytes()
        weights.append(entry)
        nodes = [{"name": key, "op": "Const"}, *nodes]
    (tmp_path / f"{name}.bin").write_bytes(blob)
    doc = {"format": "graph-model", "modelTopology": {"node": nodes},
           "weightsManifest": [{"paths": [f"{name}.bin"], "weights": weights}]}  # fmt: skip
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path


def _tf_same_conv(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """TensorFlow's SAME convolution in plain loops: out = ceil(in / stride), the odd padding row after."""
    n, h, wd, c = x.shape
    kh, kw, _, o = w.shape
    oh, ow = -(-h // stride), -(-wd // stride)
    pad_h = max((oh - 1) * stride + kh - h, 0)
    pad_w = max((ow - 1) * stride + kw - wd, 0)
    padded = np.zeros((n, h + pad_h, wd + pad_w, c), np.float64)
    padded[:, pad_h // 2 : pad_h // 2 + h, pad_w // 2 : pad_w // 2 + wd] = x
    out = np.zeros((n, oh, ow, o))
    for i in range(oh):
        for j in range(ow):
            patch = padded[:, i * stride : i * stride + kh, j * stride : j * stride + kw]
            out[:, i, j] = np.einsum("nhwc,hwco->no", patch, w)
    return out


def test_a_strided_same_convolution_pads_as_tensorflow_does(tmp_path: Path) -> None:
    """A 3x3 stride-2 SAME convolution of a 6x6 input pads one row and column after, none before
    (torch's symmetric padding would shift every output); bias and Relu6 are fused, weights float16."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    nodes = [{"name": "x", "op": "Placeholder"},
             {"name": "conv", "op": "_FusedConv2D", "input": ["x", "w", "b"],
              "attr": _conv_attr(2, "SAME", ("BiasAdd", "Relu6"))}]  # fmt: skip
    graph = TfjsGraph(_write(tmp_path, nodes, {"w": (w, "float16"), "b": (bias, None)}))
    x = rng.normal(size=(1, 6, 6, 2)).astype(np.float32) * 3
    (out,) = graph.run({"x": torch.from_numpy(x)}, ["conv"])
    want = np.clip(_tf_same_conv(x, w.astype(np.float16).astype(np.float64), 2) + bias, 0, 6)
    assert out.shape == (1, 3, 3, 4)
    np.testing.assert_allclose(out.numpy(), want, atol=1e-4)
    symmetric = torch.nn.functional.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2),
                                           torch.from_numpy(w).permute(3, 2, 0, 1), stride=2, padding=1)  # fmt: skip
    assert not np.allclose(symmetric.permute(0, 2, 3, 1).numpy() + bias, want, atol=1e-2)  # the test can fail


@pytest.mark.parametrize("size", [5, 6])
def test_pointwise_and_evenly_padded_convolutions_in_a_chain(tmp_path: Path, size: int) -> None:
    """The shortcuts: a 1x1 stride-1 convolution (a matrix product on NHWC; with bias and Relu, and without
    either) feeding a 3x3 stride-1 SAME one (its padding handed to the convolution) feeding a 1x1 stride-2
    one (no shortcut), each checked against TensorFlow's arithmetic on odd and even sizes."""
    rng = np.random.default_rng(2)
    w1, w2, w3 = (rng.normal(size=s).astype(np.float32) for s in ((1, 1, 3, 5), (3, 3, 5, 4), (1, 1, 4, 2)))
    b1, b3 = rng.normal(size=5).astype(np.float32), rng.normal(size=2).astype(np.float32)
    nodes = [{"name": "x", "op": "Placeholder"},
             {"name": "pw", "op": "_FusedConv2D", "input": ["x", "w1", "b1"],
              "attr": _conv_attr(1, "SAME", ("BiasAdd", "Relu"))},
             {"name": "sq", "op": "Conv2D", "input": ["pw", "w2"], "attr": _conv_attr(1, "SAME", ())},
             {"name": "st", "op": "_FusedConv2D", "input": ["sq", "w3", "b3"],
              "attr": _conv_attr(2, "VALID", ("BiasAdd",))},
             {"name": "plain", "op": "Conv2D", "input": ["sq", "w3"], "attr": _conv_attr(1, "VALID", ())}]  # fmt: skip
    graph = TfjsGraph(_write(tmp_path, nodes, {"w1": (w1, None), "b1": (b1, None), "w2": (w2, None),
                                               "w3": (w3, None), "b3": (b3, None)}))  # fmt: skip
    x = rng.normal(size=(2, size, size, 3)).astype(np.float32)
    pw, sq, st, plain = graph.run({"x": torch.from_numpy(x)}, ["pw", "sq", "st", "plain"])
    want_pw = np.maximum(np.einsum("nhwc,co->nhwo", x, w1[0, 0]) + b1, 0)
    want_sq = _tf_same_conv(want_pw, w2, 1)
    want_st = np.einsum("nhwc,co->nhwo", want_sq[:, ::2, ::2], w3[0, 0]) + b3
    assert (pw.shape, sq.shape, st.shape) == ((2, size, size, 5), (2, size, size, 4), (2, (size + 1) // 2, (size + 1) // 2, 2))
    np.testing.assert_allclose(pw.numpy(), want_pw, atol=1e-5)
    np.testing.assert_allclose(sq.numpy(), want_sq, atol=1e-4)
    np.testing.assert_allclose(st.numpy(), want_st, atol=1e-4)
    np.testing.assert_allclose(plain.numpy(), np.einsum("nhwc,co->nhwo", want_sq, w3[0, 0]), atol=1e-4)
    assert (pw.numpy() == 0).any() and (want_sq < 0).any()  # Relu acted on the first and not on the second


def test_depthwise_resize_and_a_keypoint_decoding_chain(tmp_path: Path) -> None:
    """Depthwise convolution (uint8-quantised kernel), half-pixel bilinear upsampling, a sigmoid, and the
    ArgMax / FloorDiv / Pack / GatherNd chain a heatmap decoder uses: the peak's row and column."""
    rng = np.random.default_rng(1)
    dw = rng.uniform(-1, 1, size=(3, 3, 2, 1)).astype(np.float32)
    consts = {"dw": (dw, "uint8"), "size": (np.array([8, 8], np.int32), None),
              "flat": (np.array([1, 64, 2], np.int32), None), "axis1": (np.array(1, np.int32), None),
              "eight": (np.array(8, np.int32), None), "zero": (np.array([0, 0], np.int32), None)}  # fmt: skip
    nodes = [
        {"name": "x", "op": "Placeholder"},
        {"name": "d", "op": "DepthwiseConv2dNative", "input": ["x", "dw"], "attr": _conv_attr(1, "SAME", ())},
        {"name": "up", "op": "ResizeBilinear", "input": ["d", "size"], "attr": {"half_pixel_centers": {"b": True}}},
        {"name": "p", "op": "Sigmoid", "input": ["up"]},
        {"name": "r", "op": "Reshape", "input": ["p", "flat"]},
        {"name": "am", "op": "ArgMax", "input": ["r", "axis1"]},
        {"name": "row", "op": "FloorDiv", "input": ["am", "eight"]},
        {"name": "rc", "op": "Pack", "input": ["row", "am"], "attr": {"axis": {"i": "0"}}},
        {"name": "u", "op": "Unpack", "input": ["rc"], "attr": {"axis": {"i": "0"}}},
        {"name": "first", "op": "Identity", "input": ["u:1"]},
        {"name": "g", "op": "GatherNd", "input": ["r", "zero"]},
    ]
    graph = TfjsGraph(_write(tmp_path, nodes, consts))
    x = rng.normal(size=(1, 4, 4, 2)).astype(np.float32)
    d, up, row, flat, g = graph.run({"x": torch.from_numpy(x)}, ["d", "up", "row", "first", "g"])
    lo, scale = float(dw.min()), float(dw.max() - dw.min()) / 255
    kernel = np.round((dw - lo) / scale) * scale + lo  # what the uint8 shard holds
    want_d = np.concatenate([_tf_same_conv(x[..., c : c + 1], kernel[:, :, c : c + 1], 1) for c in range(2)], -1)
    np.testing.assert_allclose(d.numpy(), want_d, atol=1e-5)
    # half-pixel centres, 2x: output pixel 0 samples input -0.25 (clamped to 0), pixel 1 samples 0.25
    np.testing.assert_allclose(up[0, 0, 0].numpy(), want_d[0, 0, 0], atol=1e-5)
    np.testing.assert_allclose(up[0, 1, 1].numpy(),
                               0.75 * 0.75 * want_d[0, 0, 0] + 0.75 * 0.25 * (want_d[0, 0, 1] + want_d[0, 1, 0])
                               + 0.25 * 0.25 * want_d[0, 1, 1], atol=1e-5)  # fmt: skip
    probs = 1 / (1 + np.exp(-up.numpy().reshape(64, 2)))
    np.testing.assert_array_equal(row.numpy(), [probs.argmax(0) // 8])
    np.testing.assert_array_equal(flat.numpy(), [probs.argmax(0)])
    np.testing.assert_allclose(g.numpy(), probs[0], atol=1e-6)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("op", r"ops this runner does not have: MatMul"),
        ("short", r"the weight shards end inside 'w'"),
        ("long", r"hold 40 bytes, the manifest names 36"),
        ("missing", r"weight shard .*g\.bin is missing"),
        ("outside", r"weight shard 'g\.bin' is outside|is outside the model's folder"),
        ("not json", r"not a TensorFlow\.js graph model"),
        ("layers", r"not a TensorFlow\.js graph model .*format 'layers-model'"),
        ("padding", r"padding 'EXPLICIT' is not supported"),
        ("fused", r"fused op 'LeakyRelu' is not supported"),
        ("order", r"node 'c' reads 'y' before it is made"),
        ("shape", r"weight 'w' has shape \[1, -1, 1, 9\]"),
        ("huge", r"the weight shards end inside 'w'"),
        ("node", r"damaged graph \(AttributeError"),
        ("attr", r"damaged graph \(KeyError: 'padding'\)"),
    ],
)
def test_what_it_cannot_run_is_refused_at_load_naming_the_file(tmp_path: Path, damage: str, message: str) -> None:
    w = np.ones((1, 1, 1, 9), np.float32)
    attr = _conv_attr(1, "EXPLICIT" if damage == "padding" else "SAME", ("LeakyRelu",) if damage == "fused" else ())
    nodes = [{"name": "x", "op": "Placeholder"}, {"name": "c", "op": "Conv2D", "input": ["x", "w"], "attr": attr}]
    if damage == "op":
        nodes.append({"name": "m", "op": "MatMul", "input": ["c", "w"]})
    path = _write(tmp_path, nodes, {"w": (w, None)})
    shard = tmp_path / "g.bin"
    doc = json.loads(path.read_text())
    if damage == "short":
        shard.write_bytes(shard.read_bytes()[:20])
    elif damage == "long":
        shard.write_bytes(shard.read_bytes() + b"\0" * 4)
    elif damage == "missing":
        shard.unlink()
    elif damage == "outside":
        (tmp_path / "sub").mkdir()
        path = tmp_path / "sub" / "g.json"
        doc["weightsManifest"][0]["paths"] = ["../g.bin"]
        path.write_text(json.dumps(doc))
    elif damage == "not json":
        path.write_bytes(b"\x89PNG not json")
    elif damage in ("order", "shape", "huge", "node", "attr"):
        if damage == "node":
            doc["modelTopology"]["node"].append("not a node")
        elif damage == "attr":
            del doc["modelTopology"]["node"][-1]["attr"]["padding"]
        elif damage == "order":
            doc["modelTopology"]["node"][-1]["input"] = ["y", "w"]
            doc["modelTopology"]["node"].append({"name": "y", "op": "Sqrt", "input": ["x"]})
        else:
            doc["weightsManifest"][0]["weights"][0]["shape"] = [1, -1, 1, 9] if damage == "shape" else [2**40, 2**40, 2**40, 9]
        path.write_text(json.dumps(doc))
    elif damage == "layers":
        doc["format"] = "layers-model"
        path.write_text(json.dumps(doc))
    with pytest.raises(TfjsGraphError, match=message) as info:
        TfjsGraph(path)
    assert str(path) in str(info.value)


def test_a_run_without_its_input_or_asked_for_a_missing_output_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, [{"name": "x", "op": "Placeholder"}, {"name": "y", "op": "Sqrt", "input": ["x"]}], {})
    graph = TfjsGraph(path)
    with pytest.raises(ValueError, match="no value for the graph's input"):
        graph.run({}, ["y"])
    with pytest.raises(ValueError, match="no output"):
        graph.run({"x": torch.ones(1)}, ["z"])
    (y,) = graph.run({"x": torch.tensor([4.0, 9.0])}, ["y"])
    assert y.tolist() == [2.0, 3.0]


def test_squeeze_excite_ops_and_legacy_resizing_match_tensorflow(tmp_path: Path) -> None:
    """`Mean` over the spatial axes (kept), `Add`, and a bilinear resize with neither half-pixel centres nor
    aligned corners (CenterNet's upsampling): output pixel i reads input i x in / out, the edge repeated."""
    x = np.arange(2 * 3 * 2, dtype=np.float32).reshape(1, 2, 3, 2) ** 1.5
    nodes = [{"name": "x", "op": "Placeholder"},
             {"name": "m", "op": "Mean", "input": ["x", "axes"], "attr": {"keep_dims": {"b": True}}},
             {"name": "a", "op": "Add", "input": ["x", "m"]},
             {"name": "up", "op": "ResizeBilinear", "input": ["a", "size"]}]  # fmt: skip
    consts = {"axes": (np.array([1, 2], np.int32), None), "size": (np.array([4, 6], np.int32), None)}
    (m, up) = TfjsGraph(_write(tmp_path, nodes, consts)).run({"x": torch.from_numpy(x)}, ["m", "up"])
    a = x + x.mean((1, 2), keepdims=True)
    np.testing.assert_allclose(m.numpy(), x.mean((1, 2), keepdims=True), rtol=1e-6)
    want = np.zeros((1, 4, 6, 2))
    for i in range(4):
        for j in range(6):
            y0, x0 = i * 2 / 4, j * 3 / 6
            r0, c0 = int(y0), int(x0)
            r1, c1 = min(r0 + 1, 1), min(c0 + 1, 2)
            fy, fx = y0 - r0, x0 - c0
            want[0, i, j] = ((1 - fy) * ((1 - fx) * a[0, r0, c0] + fx * a[0, r0, c1])
                             + fy * ((1 - fx) * a[0, r1, c0] + fx * a[0, r1, c1]))  # fmt: skip
    np.testing.assert_allclose(up.numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(up.numpy()[0, ::2, ::2], a[0], rtol=1e-5)  # even pixels are the input's own


def test_a_graph_loaded_for_its_outputs_keeps_what_they_need(tmp_path: Path) -> None:
    """Loaded for one output, a graph drops the nodes only others need (here one with an op this runner does
    not have, as a detector's top-k decoding); an output it does not have is refused naming the file."""
    nodes = [{"name": "x", "op": "Placeholder"}, {"name": "y", "op": "Sqrt", "input": ["x"]},
             {"name": "k", "op": "TopKV2", "input": ["y", "n"]}]  # fmt: skip
    path = _write(tmp_path, nodes, {"n": (np.array(1, np.int32), None)})
    with pytest.raises(TfjsGraphError, match="TopKV2"):
        TfjsGraph(path)
    graph = TfjsGraph(path, outputs=["y"])
    assert [n["name"] for n in graph.nodes] == ["x", "y"] and graph.consts == {}
    (y,) = graph.run({"x": torch.tensor([16.0])}, ["y"])
    assert y.tolist() == [4.0]
    with pytest.raises(ValueError, match="no output"):
        graph.run({"x": torch.tensor([16.0])}, ["k"])
    with pytest.raises(TfjsGraphError, match=r"g\.json: the graph has no node 'z'"):
        TfjsGraph(path, outputs=["z"])


def test_a_run_computes_only_what_its_outputs_need(tmp_path: Path) -> None:
    """Asked for one output, a run skips the nodes only another needs: here a reshape that fails on this input
    (a whole pass would raise); asked for both, it runs and fails naming the reshape's error."""
    nodes = [{"name": "x", "op": "Placeholder"}, {"name": "y", "op": "Sqrt", "input": ["x"]},
             {"name": "r", "op": "Reshape", "input": ["x", "shape"]}]  # fmt: skip
    graph = TfjsGraph(_write(tmp_path, nodes, {"shape": (np.array([5], np.int32), None)}))
    (y,) = graph.run({"x": torch.tensor([16.0, 4.0])}, ["y"])
    assert y.tolist() == [4.0, 2.0]
    with pytest.raises(RuntimeError, match="invalid for input of size 2"):
        graph.run({"x": torch.tensor([16.0, 4.0])}, ["y", "r"])
    (r,) = graph.run({"x": torch.arange(5.0)}, ["r:0"])
    assert r.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
