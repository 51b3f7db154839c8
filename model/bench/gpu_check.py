"""GPU check: CPU vs CUDA parity, torchvision DCNv2 on CUDA, a short head fine-tuning, throughput; one JSON.

Run ``scripts/gpu_check.sh [OUT.json]`` (or ``python -m model.bench.gpu_check --out OUT.json``) on a
CUDA machine; it takes a few minutes. Every check records its figures and ``ok``; the exit status is
1 when any check fails, 2 without CUDA. Tolerances (float32, TF32 off wherever CPU and CUDA outputs
are compared):

- HRNet-W48 and the head, CPU vs CUDA on the same weights and inputs: max |diff| <= 1e-3 of the
  output's max |value| (cuDNN and oneDNN sum in different orders), and decoded keypoints within
  0.5 heatmap px (keypoints are compared where the heatmap's peak is unambiguous: it beats every
  value more than 3 px away by 10% of the map's range; random weights make many peaks ambiguous);
- torchvision's DCNv2 on CUDA vs the pure-PyTorch one on CUDA (forward and all five gradients) and
  in float64 on the CPU (forward and the gradients but the offsets'), the five PCN dilations, 17
  offset groups, masks: max |diff| / (1 + max |value|) <= 1e-4;
- bf16 / fp16 autocast vs fp32: HRNet-W48 heatmaps within 5% (bf16) / 1% (fp16) of their range;
  the fine-tuned head's decoded keypoints on heatmaps with one Gaussian per joint: mean distance
  <= 0.5 heatmap px, 95th percentile <= 1 px (2 px for bf16, whose mantissa has 8 bits);
- fine-tuning: the last epoch's loss is below the first's, and the checkpoint loads on the CPU and
  gives the CUDA outputs within the parity tolerance;
- MoveNet Thunder (the default backbone where fetched) on real crops, CPU vs CUDA: keypoints within
  0.5 crop px, scores within 0.01.

Throughput (person-frames per second, peak GPU memory) of HRNet-W48 and the head alone, fp32 and
autocast, batched like the predictor, and end to end with `python -m model bench-video --device cuda`
figures when ``--video`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from model.bench.weights import variance_preserving_init
from model.heatmaps import decode
from model.nets.blocks import deform_conv2d
from model.nets.dcpose import DILATIONS, DCPose, build_dcpose
from model.nets.hrnet import HRNet
from model.nets.runtime import autocast, place_module

logger = logging.getLogger(__name__)

__all__ = ["check_autocast", "check_dcn", "check_finetune", "check_parity", "main", "run_gpu_check", "throughput"]

CROP, HEATMAP, K = (384, 288), (96, 72), 17
REL_TOL, KP_TOL = 1e-3, 0.5


def _nets(seed: int = 0) -> tuple[HRNet, DCPose]:
    """HRNet-W48 and a head with variance-preserving random weights (trained-like magnitudes)."""
    net, head = HRNet(width=48, num_joints=K), build_dcpose(None, num_joints=K)
    variance_preserving_init(net, seed)
    variance_preserving_init(head, seed + 1)
    return net.eval(), head.eval()


def _clear_peaks(maps: torch.Tensor, radius: int = 3, margin: float = 0.1) -> torch.Tensor:
    """(B, K) True where a heatmap's maximum beats everything outside `radius` px of it by `margin`.

    Random weights give heatmaps with near-equal maxima far apart, where any rounding can move the
    argmax across the map; keypoints are compared only where the peak is unambiguous.
    """
    b, k, h, w = maps.shape
    flat = maps.reshape(b, k, -1)
    top, idx = flat.max(dim=-1)
    ys, xs = torch.arange(h).view(1, 1, h, 1), torch.arange(w).view(1, 1, 1, w)
    near = ((ys - (idx // w).view(b, k, 1, 1)).abs() <= radius) & ((xs - (idx % w).view(b, k, 1, 1)).abs() <= radius)
    second = maps.masked_fill(near, float("-inf")).reshape(b, k, -1).max(dim=-1).values
    spread = (top - flat.min(dim=-1).values).clamp_min(1e-12)
    return (top - second) / spread > margin


def _compare(cpu: torch.Tensor, gpu: torch.Tensor) -> dict[str, Any]:
    """Max |diff| relative to the output scale, and decoded keypoint distance (heatmap px) on clear peaks."""
    gpu = gpu.float().cpu()
    rel = float((cpu - gpu).abs().max() / cpu.abs().max().clamp_min(1e-12))
    xy_cpu, _ = decode(cpu.numpy())
    xy_gpu, _ = decode(gpu.numpy())
    clear = _clear_peaks(cpu)
    dist = torch.from_numpy(xy_cpu - xy_gpu).norm(dim=-1)[clear].float()
    if dist.numel() == 0:
        dist = torch.zeros(1)
    return {"max_rel_diff": rel, "kp_compared": int(clear.sum()), "kp_total": int(clear.numel()),
            "kp_mean_px": float(dist.mean()), "kp_max_px": float(dist.max()),
            "kp_p95_px": float(dist.quantile(0.95))}


@contextmanager
def _exact_float32() -> Iterator[None]:
    """TF32 off for matmuls and cuDNN convolutions (cuDNN's default is on: ~1e-3 relative error)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def check_parity(device: str = "cuda", batch: int = 2) -> dict[str, Any]:
    """HRNet-W48 and the head in float32 on CPU and on `device`, same weights and inputs."""
    with _exact_float32():
        return _parity(device, batch)


def _parity(device: str, batch: int) -> dict[str, Any]:
    net, head = _nets()
    gen = torch.Generator().manual_seed(3)
    crops = torch.randn(batch, 3, *CROP, generator=gen)
    maps = [torch.rand(batch, K, *HEATMAP, generator=gen) for _ in range(3)]
    with torch.inference_mode():
        hm_cpu, ref_cpu = net(crops), head.refine(*maps)
        net_d, head_d = place_module(net, device), place_module(head, device)
        hm_gpu = net_d(crops.to(device).contiguous(memory_format=torch.channels_last))
        ref_gpu = head_d.refine(*(m.to(device) for m in maps))
    out = {"hrnet_w48": _compare(hm_cpu, hm_gpu), "head": _compare(ref_cpu, ref_gpu)}
    out["ok"] = all(v["max_rel_diff"] <= REL_TOL and v["kp_max_px"] <= KP_TOL for v in out.values())
    return out


def check_dcn(device: str = "cuda") -> dict[str, Any]:
    """torchvision's DCNv2 on `device` vs the pure one there and in float64 on the CPU, per PCN dilation."""
    rows, ok = [], True
    for dilation in DILATIONS:
        gen = torch.Generator().manual_seed(dilation)
        b, h, w = 2, 24, 18
        args = {"x": torch.randn(b, K, h, w, generator=gen), "weight": torch.randn(K, K, 3, 3, generator=gen),
                "offset": 3 * torch.randn(b, 2 * K * 9, h, w, generator=gen), "bias": torch.randn(K, generator=gen),
                "mask": torch.rand(b, K * 9, h, w, generator=gen) * 2 - 0.5}
        cot = torch.randn(b, K, h, w, generator=gen)
        results = {}
        for name, dev, dtype, impl in (("tv", device, torch.float32, "torchvision"),
                                       ("pure", device, torch.float32, "pytorch"),
                                       ("cpu64", "cpu", torch.float64, "pytorch")):
            leaves = {k: v.to(dev, dtype).requires_grad_(True) for k, v in args.items()}
            y = deform_conv2d(**leaves, padding=dilation, dilation=dilation, impl=impl)
            grads = torch.autograd.grad((y * cot.to(dev, dtype)).sum(), list(leaves.values()))
            results[name] = [t.detach().double().cpu() for t in (y, *grads)]
        # Against float64, the offset gradient is left out: it jumps where a sample crosses a pixel
        # row or column, and float32 and float64 place a sample next to one on different sides.
        diffs = {f"{a}_vs_{ref}": max(float((p - q).abs().max() / (1 + q.abs().max()))
                                      for i, (p, q) in enumerate(zip(results[a], results[ref], strict=True))
                                      if ref != "cpu64" or i != 1 + list(args).index("offset"))
                 for a, ref in (("tv", "pure"), ("tv", "cpu64"), ("pure", "cpu64"))}
        ok &= all(v <= 1e-4 for v in diffs.values())
        rows.append({"dilation": dilation, **diffs})
    return {"layers": rows, "ok": ok}


def _peaked_heatmaps(batch: int, seed: int) -> list[torch.Tensor]:
    """(current, previous, next) heatmaps with one Gaussian per joint, neighbours moved by ~2 px."""
    from model.heatmaps import render_gaussians

    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, K, 2, generator=gen) * torch.tensor([HEATMAP[1] - 16.0, HEATMAP[0] - 16.0]) + 8
    return [render_gaussians(xy + 2 * torch.randn(batch, K, 2, generator=gen) * (i > 0), torch.ones(batch, K),
                             size=HEATMAP) for i in range(3)]


def check_autocast(device: str = "cuda", head: DCPose | None = None, batch: int = 8) -> dict[str, Any]:
    """bf16 / fp16 autocast vs fp32 on `device`: HRNet-W48 heatmaps, and the head's decoded keypoints.

    Random HRNet weights give heatmaps without clear peaks, so HRNet is held to a relative error
    (<= 0.05 bf16, 0.01 fp16 of the output's range); the head, given `head` (trained, e.g. by
    `check_finetune`) on heatmaps with one Gaussian per joint, to its decoded keypoints.
    """
    net, random_head = _nets()
    net = place_module(net, device)
    head = place_module(head if head is not None else random_head, device)
    crops = torch.randn(batch, 3, *CROP, generator=torch.Generator().manual_seed(4)).to(device)
    maps = [m.to(device) for m in _peaked_heatmaps(batch, seed=5)]

    def run(precision: str) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode(), autocast(device, precision):  # type: ignore[arg-type]
            backbone = net(crops.contiguous(memory_format=torch.channels_last)).float().cpu()
            return backbone, head.refine(*maps).float().cpu()

    (ref_bb, ref_head), out = run("fp32"), {}
    precisions = ("bf16", "fp16") if torch.device(device).type == "cuda" else ("bf16",)
    for precision in precisions:
        bb, refined = run(precision)
        rel_bb = float((bb - ref_bb).abs().max() / (ref_bb.max() - ref_bb.min()).clamp_min(1e-12))
        cmp = _compare(ref_head, refined)
        kp_limit, bb_limit = (2.0, 0.05) if precision == "bf16" else (1.0, 0.01)
        cmp["ok"] = (rel_bb <= bb_limit and cmp["kp_compared"] > 0 and cmp["kp_mean_px"] <= KP_TOL
                     and cmp["kp_p95_px"] <= kp_limit)
        out[precision] = {"hrnet_w48_rel_diff": rel_bb, "head": cmp, "ok": cmp["ok"]}
    out["ok"] = all(v["ok"] for v in out.values() if isinstance(v, dict))
    return out


def check_finetune(device: str = "cuda", workdir: Path | None = None,
                   trained: list[DCPose] | None = None) -> dict[str, Any]:
    """A short `train_head` run on `device` (simulated backbone, synthetic videos); checkpoint on CPU.

    The trained head is appended to `trained` when given (`check_autocast` uses it).
    """
    from model.bench.video import BenchSettings, _generate
    from model.checkpoint import save_checkpoint
    from model.pipeline.predictor import load_head
    from model.testing.simulated import SimulatedBackbone
    from model.training.loop import TrainConfig, train_head
    from model.training.samples import build_samples

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        root = Path(workdir or tmp)
        s = BenchSettings(train_videos=1, train_frames=12, people=2, test_frames=3)
        data = _generate(root, s, need_cost=False)
        samples = build_samples({k: data.gt[k] for k in data.train})[:24]
        readers = {k: data.reader(k) for k in data.train}
        torch.manual_seed(0)
        head = build_dcpose(None)
        t0 = time.perf_counter()
        res = train_head(head, SimulatedBackbone(data.gt, seed=0), readers, samples,
                         config=TrainConfig(epochs=3, batch_size=8, lr=1e-3, device=device, augment=False))
        seconds = time.perf_counter() - t0
        path = save_checkpoint(root / "head.pt", head, model_config={"backbone": "simulated", "num_joints": K},
                               version="gpu-check")
        cpu_head, _ = load_head(path, "simulated")
        maps = _peaked_heatmaps(4, seed=6)
        with torch.inference_mode(), _exact_float32():
            on_cpu = cpu_head.refine(*maps)
            on_gpu = place_module(head, device).refine(*(m.to(device) for m in maps))
        for r in readers.values():
            r.close()
    if trained is not None:
        trained.append(head)
    cmp = _compare(on_cpu, on_gpu)
    losses = res.epoch_losses
    ok = len(losses) >= 2 and losses[-1] < losses[0] and cmp["max_rel_diff"] <= REL_TOL
    return {"epoch_losses": losses, "steps": res.steps, "seconds": seconds, "cpu_vs_device": cmp, "ok": ok}


def _rate(fn: Callable[[], object], items: int, device: str, repeats: int = 5) -> dict[str, float]:
    """Items per second (best of `repeats` after one warm-up) and peak device memory."""
    cuda = torch.device(device).type == "cuda"
    with torch.inference_mode():
        fn()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return {"per_second": items / best, "ms_per_item": 1e3 * best / items, "peak_mem_mb": peak}


def throughput(device: str = "cuda", batch: int = 32) -> dict[str, Any]:
    """Person-frames per second: HRNet-W48 crops, the head alone, and the cached/exact floors."""
    torch.backends.cudnn.benchmark = torch.device(device).type == "cuda"
    net, head = _nets()
    net, head = place_module(net, device), place_module(head, device)
    crops = torch.randn(batch, 3, *CROP, device=device).contiguous(memory_format=torch.channels_last)
    maps = [torch.rand(batch, K, *HEATMAP, device=device) for _ in range(3)]
    out: dict[str, Any] = {"batch": batch}
    for precision in ("fp32", "bf16", "fp16") if torch.device(device).type == "cuda" else ("fp32",):
        def backbone(p: str = precision) -> object:
            with autocast(device, p):  # type: ignore[arg-type]
                return net(crops)

        def refine(p: str = precision) -> object:
            with autocast(device, p):  # type: ignore[arg-type]
                return head.refine(*maps)

        bb, hd = _rate(backbone, batch, device), _rate(refine, batch, device)
        cached = 1e3 / (bb["ms_per_item"] + hd["ms_per_item"])  # 1 backbone + 1 head pass per person-frame
        exact = 1e3 / (3 * bb["ms_per_item"] + hd["ms_per_item"])
        out[precision] = {"hrnet_w48": bb, "head": hd, "cached_floor_per_second": cached,
                          "exact_floor_per_second": exact}
    return out


def check_movenet(device: str = "cuda") -> dict[str, Any]:
    """MoveNet Thunder's graph (`model.nets.tfjs_graph`) on the CPU and on `device`, on real person crops of the
    test stills: the 17 keypoints of each crop within 0.5 px (of the 384 px crop) and the scores within 0.01.
    Skipped (ok) when the weights were not fetched (``make movenet``)."""
    import numpy as np

    from model.backbones.movenet import build_movenet
    from model.backbones.movenet_weights import DEFAULT_WEIGHTS
    from model.bench.real import load_stills
    from model.transforms import crop_geometry, crop_image

    if not DEFAULT_WEIGHTS.is_file():
        return {"ok": True, "skipped": f"{DEFAULT_WEIGHTS} not fetched (make movenet)"}
    stills = Path(__file__).resolve().parents[2] / "tests" / "assets" / "real-stills"
    crops = np.stack([crop_image(image, crop_geometry(p.box)) for gt, image in load_stills(stills)
                      for p in gt.frames[0].persons if p.box is not None])  # fmt: skip
    (xy_cpu, conf_cpu), (xy_dev, conf_dev) = (build_movenet(None, d).keypoints(crops) for d in ("cpu", device))
    px, score = float(np.abs(xy_cpu - xy_dev).max()), float(np.abs(conf_cpu - conf_dev).max())
    return {"ok": px <= 0.5 and score <= 0.01, "crops": len(crops), "max_px": round(px, 4), "max_score": round(score, 5)}


def run_gpu_check(device: str = "cuda", video: bool = True,
                  on_step: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every check and the throughput figures, each timed; `video` adds the bench-video cost section.

    `on_step` gets the report so far after each step (the CLI writes it, so that a run stopped by its
    time limit still leaves the figures of the steps that finished).
    """
    name = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "cpu"
    report: dict[str, Any] = {"device": device, "device_name": name,
                              "torch": torch.__version__, "checks": {}}
    trained: list[DCPose] = []
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("parity", lambda: check_parity(device)), ("dcn", lambda: check_dcn(device)),
        ("finetune", lambda: check_finetune(device, trained=trained)),
        ("autocast", lambda: check_autocast(device, trained[0] if trained else None)),
        ("throughput", lambda: throughput(device)), ("movenet", lambda: check_movenet(device)),
    ]
    if video:
        steps.append(("video", lambda: _video_cost(device)))
    for name, step in steps:
        t0 = time.perf_counter()
        logger.info("gpu check: %s ...", name)
        try:
            result = step()
        except Exception as exc:  # noqa: BLE001 - one failing check must not hide the others' figures
            logger.exception("gpu check %s failed", name)
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        report["checks"][name] = result
        logger.info("gpu check: %s %s in %.0f s", name, "ok" if result.get("ok", True) else "FAILED",
                    result["seconds"])
        report["ok"] = all(c.get("ok", True) for c in report["checks"].values())
        report["complete"] = len(report["checks"]) == len(steps)
        if on_step is not None:
            on_step(report)
    return report


def _video_cost(device: str) -> dict[str, Any]:
    """End to end: the predictor's person-frames per second on synthetic videos (bench-video cost)."""
    from dataclasses import asdict

    from model.bench.video import BenchSettings, run_video_bench

    settings = BenchSettings(cost_frames=24, people=4, backbone_batch=32, device=device)
    result = run_video_bench(settings, sections=("cost",))
    return {"cost": [asdict(row) for row in result.cost], "floors": [asdict(f) for f in result.floors],
            "notes": result.notes}


def main(argv: list[str] | None = None) -> int:
    """`python -m model.bench.gpu_check [--out FILE] [--device cuda] [--no-video]`."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json", help="JSON file of figures (default gpu_check.json)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-video", action="store_true", help="skip the end-to-end predictor figures")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not torch.cuda.is_available():
        print("error: no CUDA device (torch.cuda.is_available() is False); run this on a GPU machine",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    report = run_gpu_check(args.device, video=not args.no_video,
                           on_step=lambda partial: out.write_text(json.dumps(partial, indent=2)))
    print(json.dumps({k: v.get("ok") for k, v in report["checks"].items()}))
    print(f"figures written to {args.out}; {'all checks passed' if report['ok'] else 'SOME CHECKS FAILED'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
