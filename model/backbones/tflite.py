"""`TfliteGraph`: a bundled mediapipe ``.tflite`` model run on ready-made input images, through mediapipe.

mediapipe 0.10.21 has no Python TFLite interpreter, but its framework bindings build and run any
CalculatorGraph whose calculators are linked in, and the legacy pose solution links the four used here:
``ImageToTensorCalculator`` (uint8 RGB -> float tensor in a chosen range), ``InferenceCalculator``
(TFLite + XNNPACK on the CPU), ``SplitTensorVectorCalculator`` and ``TensorsToFloatsCalculator`` (each
output tensor -> a flat float list). So no extra package (ai-edge-litert pulls numpy 2) is needed.
Images passed to `TfliteGraph.run` must already have the model's input size: the callers warp them with
OpenCV, so ImageToTensor only converts and normalises. XNNPACK is given the process's CPU threads, up to
four (`default_threads`): left unset, mediapipe runs it on one thread on desktop Linux.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import numpy as np

__all__ = ["MAX_THREADS", "MediaPipeUnavailableError", "TfliteGraph", "bundled_model_root", "default_threads"]


class MediaPipeUnavailableError(ImportError):
    """mediapipe 0.10.21 (its framework bindings and bundled pose models) cannot be used here."""


def _import_mediapipe() -> Any:
    try:
        import mediapipe as mp  # lazy: keeps `import model` light
    except ImportError as exc:
        raise MediaPipeUnavailableError(
            "the BlazePose models need mediapipe 0.10.21 (pip install 'mediapipe==0.10.21' 'numpy<2'); "
            f"importing it failed: {exc}"
        ) from exc
    return mp


def bundled_model_root() -> str:
    """The folder that holds the ``mediapipe`` package (bundled model paths are relative to it)."""
    return os.path.dirname(os.path.dirname(_import_mediapipe().__file__))


MAX_THREADS = 4  # the clamp of mediapipe's own default on Android and iOS (half the cores, 1 to 4)


def default_threads() -> int:
    """CPU threads for XNNPACK: torch's intra-op thread count (the machine's cores, or `OMP_NUM_THREADS`, or
    what `torch.set_num_threads` set), so the mediapipe and torch networks share one setting, at most
    `MAX_THREADS` (these models are small: a 224 or 256 px input). mediapipe 0.10.21's own default on desktop
    Linux is one thread: the landmark model took 37-41 ms a pass there and 21-27 ms on two threads, the person
    detector 18 and 13-14 ms (2-core machine, 40 passes each)."""
    import torch

    return max(1, min(int(torch.get_num_threads()), MAX_THREADS))


def _graph_text(model_path: str, size: tuple[int, int], value_range: tuple[float, float], n: int,
                threads: int) -> str:
    """Text proto of image -> tensor -> TFLite (XNNPACK on `threads` threads) -> one float stream per output."""
    w, h = size
    lo, hi = value_range
    model_path = model_path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")  # a text-proto string
    splits = " ".join(f'output_stream: "o{i}"' for i in range(n))
    ranges = " ".join(f"ranges {{ begin: {i} end: {i + 1} }}" for i in range(n))
    floats = "".join(
        f'node {{ calculator: "TensorsToFloatsCalculator" input_stream: "TENSORS:o{i}" '
        f'output_stream: "FLOATS:f{i}" }}\n' for i in range(n)
    )
    return (
        'input_stream: "image"\n' + "".join(f'output_stream: "f{i}"\n' for i in range(n)) + f"""
node {{ calculator: "ImageToTensorCalculator" input_stream: "IMAGE:image" output_stream: "TENSORS:in_t"
  options {{ [mediapipe.ImageToTensorCalculatorOptions.ext] {{
    output_tensor_width: {w} output_tensor_height: {h} keep_aspect_ratio: false
    output_tensor_float_range {{ min: {lo} max: {hi} }} }} }} }}
node {{ calculator: "InferenceCalculator" input_stream: "TENSORS:in_t" output_stream: "TENSORS:out_t"
  options {{ [mediapipe.InferenceCalculatorOptions.ext] {{ model_path: "{model_path}"
    delegate {{ xnnpack {{ num_threads: {threads} }} }} }} }} }}
node {{ calculator: "SplitTensorVectorCalculator" input_stream: "out_t" {splits}
  options {{ [mediapipe.SplitVectorCalculatorOptions.ext] {{ {ranges} }} }} }}
""" + floats
    )


class TfliteGraph:
    """One bundled TFLite model in a synchronous mediapipe graph; calls are serialised with a lock.

    Args:
        model_path: path relative to `bundled_model_root`, e.g.
            ``"mediapipe/modules/pose_landmark/pose_landmark_full.tflite"``.
        input_size: (W, H) of the model input; `run` takes images of exactly this size.
        value_range: (min, max) that the uint8 range [0, 255] maps to.
        num_outputs: number of output tensors of the model.
        threads: XNNPACK's CPU threads (>= 1); `default_threads()` when None.

    Raises:
        MediaPipeUnavailableError: mediapipe cannot be imported.
        FileNotFoundError: the model file is not bundled with the installed mediapipe.
    """

    def __init__(self, model_path: str, input_size: tuple[int, int], value_range: tuple[float, float],
                 num_outputs: int, threads: int | None = None) -> None:
        threads = default_threads() if threads is None else int(threads)
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        mp = _import_mediapipe()
        from google.protobuf import text_format
        from mediapipe.framework import calculator_pb2
        from mediapipe.python import _framework_bindings as bindings
        from mediapipe.python import packet_creator, packet_getter

        root = bundled_model_root()
        if not os.path.isfile(os.path.join(root, model_path)):
            raise FileNotFoundError(f"bundled model not found: {os.path.join(root, model_path)} "
                                    "(mediapipe 0.10.21 ships it)")
        bindings.resource_util.set_resource_dir(root)
        self._mp, self._creator, self._getter = mp, packet_creator, packet_getter
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.num_outputs = int(num_outputs)
        self.threads = threads
        config = text_format.Parse(_graph_text(model_path, self.input_size, value_range, self.num_outputs, threads),
                                   calculator_pb2.CalculatorGraphConfig())
        self._graph: Any = bindings.calculator_graph.CalculatorGraph(graph_config=config)
        self._outputs: dict[int, np.ndarray] = {}
        for i in range(self.num_outputs):
            self._graph.observe_output_stream(f"f{i}", self._observer(i))
        self._graph.start_run()
        self._timestamp = 0
        self._lock = threading.Lock()

    def _observer(self, index: int) -> Callable[[str, Any], None]:
        def store(_stream: str, packet: Any) -> None:
            self._outputs[index] = np.asarray(self._getter.get_float_list(packet), dtype=np.float32)

        return store

    def run(self, image_rgb: np.ndarray) -> list[np.ndarray]:
        """Runs the model once.

        Args:
            image_rgb: (H, W, 3) uint8 RGB image of exactly `input_size`.

        Returns:
            One flat float32 array per model output, in the model's output order.
        """
        w, h = self.input_size
        if image_rgb.shape != (h, w, 3) or image_rgb.dtype != np.uint8:
            raise ValueError(f"expected a ({h}, {w}, 3) uint8 image, got {image_rgb.shape} {image_rgb.dtype}")
        with self._lock:
            if self._graph is None:
                raise RuntimeError("the TFLite graph is closed")
            self._outputs.clear()
            packet = self._creator.create_image_frame(image_format=self._mp.ImageFormat.SRGB,
                                                      data=np.ascontiguousarray(image_rgb))
            self._graph.add_packet_to_input_stream("image", packet.at(self._timestamp))
            self._timestamp += 1
            self._graph.wait_until_idle()
            if len(self._outputs) != self.num_outputs:
                raise RuntimeError(f"the model returned {len(self._outputs)} of {self.num_outputs} outputs")
            return [self._outputs[i] for i in range(self.num_outputs)]

    def close(self) -> None:
        """Stops the graph; `run` raises afterwards."""
        with self._lock:
            if self._graph is not None:
                self._graph.close_all_packet_sources()
                self._graph.wait_until_done()
                self._graph = None

    def __enter__(self) -> TfliteGraph:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
