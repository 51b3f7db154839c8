"""Network benchmark: HRNet backbone per crop, DCPose head per person-frame, DCNv2 implementations.

Run ``python -m model bench [--device cpu|cuda] [--json] [--batch N] [--backbone hrnet_w48|hrnet_w32]
[--repeats R]``. Timings are medians of ``R`` runs after warm-up, under ``torch.inference_mode``;
on CUDA every timed call is bracketed by ``torch.cuda.synchronize``. Weights are random (no weights
ship with the project), drawn with a variance-preserving scale so activations keep trained-like
magnitudes; dense-convolution timings do not depend on the values.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` per section; on CPU the growth of the
process's peak resident set (``getrusage`` max RSS) during the section, which is 0 when an earlier
section already reached a higher peak (sections run from small to large to keep it informative).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal, Self

import torch

from annotation_io.arguments import positive_int
from model.bench.weights import variance_preserving_init as _variance_preserving_init
from model.cli.checks import check_device
from model.nets.blocks import deform_conv2d
from model.nets.dcpose import build_dcpose
from model.nets.hrnet import HRNet, count_parameters

logger = logging.getLogger(__name__)

__all__ = ["BenchResult", "Section", "handle", "register_parser", "run_benchmark"]

Backbone = Literal["hrnet_w48", "hrnet_w32"]
BACKBONE_WIDTHS: dict[str, int] = {"hrnet_w48": 48, "hrnet_w32": 32}
CROP = (384, 288)  # H x W of the released DCPose / HRNet-W48 input
HEATMAP = (96, 72)  # CROP / 4
DILATIONS = (3, 6, 9, 12, 15)  # the five PCN branches (the released DCPose code)


@dataclass
class Section:
    """One measured piece.

    Attributes:
        name: what was run.
        batch: items per call.
        median_ms: median wall time of one call.
        per_item_ms: ``median_ms / batch``.
        runs_ms: every timed call.
        peak_mem_mb: see the module docstring; None when not measured.
        note: free text (e.g. why a variant is unavailable).
    """

    name: str
    batch: int
    median_ms: float | None
    per_item_ms: float | None
    runs_ms: list[float] = field(default_factory=list)
    peak_mem_mb: float | None = None
    note: str = ""


@dataclass
class BenchResult:
    """Everything one benchmark run measured."""

    device: str
    device_name: str
    torch_version: str
    threads: int
    backbone: str
    batch: int
    repeats: int
    params: dict[str, int]
    sections: list[Section]
    # 3 backbone crops + 1 head pass: the DCPose cost of one person in one frame.
    person_frame_ms: float | None
    # Peak resident set of the whole process (models, inputs, activations, the torch runtime).
    process_peak_rss_mb: float


def _cpu_name() -> str:
    """CPU model from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical cores"
    except OSError:
        pass
    return platform.processor() or "cpu"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _PeakMemory:
    """Peak memory of a section: CUDA allocator peak, or growth of the process max RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mb: float | None = None

    def __enter__(self) -> Self:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._start) / 1024


def _time(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Wall times in ms of ``repeats`` calls after ``warmup`` untimed ones."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append((time.perf_counter() - start) * 1e3)
    return times


def _section(
    name: str, fn: Callable[[], object], device: torch.device, batch: int, repeats: int, warmup: int
) -> Section:
    with _PeakMemory(device) as mem:
        runs = _time(fn, device, repeats, warmup)
    median = statistics.median(runs)
    logger.info("%s: median %.1f ms for batch %d", name, median, batch)
    peak = None if mem.mb is None else round(mem.mb, 1)
    return Section(name, batch, round(median, 3), round(median / batch, 3), [round(r, 3) for r in runs], peak)


def _torchvision_reason() -> str | None:
    """None if ``torchvision.ops.deform_conv2d`` imports, else why not."""
    try:
        from torchvision.ops import deform_conv2d as _  # noqa: F401
    # Broad on purpose: the CUDA-only wheel raises RuntimeError at import, a missing one ImportError.
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def _dcn_sections(device: torch.device, batch: int, repeats: int, warmup: int, k: int) -> list[Section]:
    """The five PCN DCNv2 layers on (B, K, 96, 72) maps, pure PyTorch vs torchvision."""
    gen = torch.Generator().manual_seed(1)
    h, w = HEATMAP
    x = torch.randn(batch, k, h, w, generator=gen).to(device)
    weight = (torch.randn(k, k, 3, 3, generator=gen) / (9 * k) ** 0.5).to(device)
    bias = torch.zeros(k, device=device)
    offsets = [(torch.rand(batch, 2 * k * 9, h, w, generator=gen) * 5 - 2.5).to(device) for _ in DILATIONS]
    masks = [torch.rand(batch, k * 9, h, w, generator=gen).to(device) for _ in DILATIONS]

    def pcn(impl: str) -> Callable[[], object]:
        return lambda: [
            deform_conv2d(x, off, weight, bias, padding=d, dilation=d, mask=m, impl=impl)
            for off, m, d in zip(offsets, masks, DILATIONS, strict=True)
        ]

    name = f"DCNv2 x5 (PCN, {k} ch, {h}x{w})"
    sections = [_section(f"{name} pure PyTorch", pcn("pytorch"), device, batch, repeats, warmup)]
    reason = _torchvision_reason()
    if reason is None:
        sections.append(_section(f"{name} torchvision", pcn("torchvision"), device, batch, repeats, warmup))
    else:
        sections.append(Section(f"{name} torchvision", batch, None, None, note=f"unavailable: {reason}"))
    return sections


def run_benchmark(
    device: str = "cpu",
    backbone: Backbone = "hrnet_w48",
    batch: int = 1,
    repeats: int = 5,
    warmup: int = 1,
    num_joints: int = 17,
) -> BenchResult:
    """Measure backbone, head and DCNv2 speed, parameter counts and peak memory.

    Args:
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"`` works too).
        backbone: HRNet variant.
        batch: crops per backbone call and person-frames per head call.
        repeats: timed calls per section (the median is reported).
        warmup: untimed calls before timing.
        num_joints: K.

    Returns:
        The measurements.

    Raises:
        ValueError: on a bad argument or an unavailable device.
    """
    if backbone not in BACKBONE_WIDTHS:
        raise ValueError(f"backbone must be one of {sorted(BACKBONE_WIDTHS)}, got {backbone!r}")
    if batch < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need batch >= 1, repeats >= 1, warmup >= 0; got {batch}, {repeats}, {warmup}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but torch.cuda.is_available() is False")
    gen = torch.Generator().manual_seed(0)

    head = build_dcpose(None, num_joints=num_joints)
    _variance_preserving_init(head, seed=1)
    head = head.to(dev).eval()
    heatmaps = [torch.randn(batch, num_joints, *HEATMAP, generator=gen).to(dev) for _ in range(3)]
    sections = _dcn_sections(dev, batch, repeats, warmup, num_joints)
    head_section = _section(
        f"DCPose head refine ({num_joints}x{HEATMAP[0]}x{HEATMAP[1]})",
        lambda: head.refine(*heatmaps),
        dev,
        batch,
        repeats,
        warmup,
    )
    sections.append(head_section)

    net = HRNet(width=BACKBONE_WIDTHS[backbone], num_joints=num_joints)
    _variance_preserving_init(net, seed=2)
    net = net.to(dev).eval()
    crops = torch.randn(batch, 3, *CROP, generator=gen).to(dev)
    backbone_section = _section(
        f"{backbone} backbone ({CROP[0]}x{CROP[1]} crop)", lambda: net(crops), dev, batch, repeats, warmup
    )
    sections.append(backbone_section)

    params = {
        "backbone": count_parameters(net),
        "head_trainable": count_parameters(head, trainable_only=True),
        "total": count_parameters(net) + count_parameters(head),
    }
    per_frame = None
    if backbone_section.per_item_ms is not None and head_section.per_item_ms is not None:
        per_frame = 3 * backbone_section.per_item_ms + head_section.per_item_ms
    return BenchResult(
        device=str(dev),
        device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        torch_version=torch.__version__,
        threads=torch.get_num_threads(),
        backbone=backbone,
        batch=batch,
        repeats=repeats,
        params=params,
        sections=sections,
        person_frame_ms=per_frame,
        process_peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def format_result(result: BenchResult) -> str:
    """Human-readable report of a benchmark run."""
    lines = [
        f"device {result.device} ({result.device_name}), torch {result.torch_version}, "
        + f"{result.threads} threads, batch {result.batch}, median of {result.repeats}"
    ]
    for s in result.sections:
        if s.median_ms is None:
            lines.append(f"  {s.name:<52} {s.note}")
            continue
        mem = "" if s.peak_mem_mb is None else f"  peak mem +{s.peak_mem_mb:,.0f} MB"
        lines.append(f"  {s.name:<52} {s.per_item_ms:9.1f} ms/item ({s.median_ms:.1f} ms/call){mem}")
    p = result.params
    lines.append(
        f"  parameters: backbone {p['backbone']:,}, head trainable {p['head_trainable']:,}, "
        f"total {p['total']:,}"
    )
    lines.append(f"  process peak RSS: {result.process_peak_rss_mb:,.0f} MB")
    if result.person_frame_ms is not None:
        lines.append(f"  DCPose per person-frame (3 crops + head): {result.person_frame_ms:.1f} ms")
    backbone = next((s.per_item_ms for s in result.sections if "backbone" in s.name), None)
    head = next((s.per_item_ms for s in result.sections if s.name.startswith("DCPose head")), None)
    if backbone and head:
        lines.append(
            f"  person-frames per second: exact (3 crops + head) {1e3 / (3 * backbone + head):.2f}, "
            f"cached floor (1 crop + head) {1e3 / (backbone + head):.2f}, head alone {1e3 / head:.2f}; "
            f"head / backbone {head / backbone:.2f}"
        )
    return "\n".join(lines)


def register_parser(subparsers: argparse._SubParsersAction, name: str) -> None:
    """Adds the `bench` command."""
    parser = subparsers.add_parser(name, help="backbone, head and DCNv2 timings, parameters, memory",
                                   description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--batch", type=positive_int, default=1, help="crops / person-frames per call (default 1)")
    parser.add_argument("--backbone", choices=sorted(BACKBONE_WIDTHS), default="hrnet_w48",
                        help="HRNet width to time (random weights; default hrnet_w48)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed runs per section (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per section (default 1)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--head-variants", action="store_true",
                        help="also time the head before/after each CPU measure vs HRNet-W48 (model.bench.head_speed)")
    parser.set_defaults(handle=handle, log_level="WARNING")


def handle(args: argparse.Namespace) -> int:
    """Runs the benchmark and prints its figures; 2 for bad options."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        check_device(args.device)
        result = run_benchmark(args.device, args.backbone, args.batch, args.repeats, args.warmup)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(result), indent=2) if args.json else format_result(result))
    if args.head_variants:
        from model.bench.head_speed import format_head_speed, run_head_speed

        speed = run_head_speed(batch=args.batch, rounds=args.repeats)
        print(json.dumps(asdict(speed), indent=2) if args.json else format_head_speed(speed))
    return 0
