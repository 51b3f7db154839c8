"""A picklable predictor factory for training tests: the simulated backbone + stored heads, with injected faults.

Training jobs run in a spawned child process (`backend.jobs.child`), which receives the service's
predictor factory by pickling; a monkeypatch in the test process does not reach it, so the faults a
test wants in the training process travel on the factory (`HeadFactory.fault`).
"""

from __future__ import annotations

import multiprocessing
from typing import Any

import torch

from tests.backend.conftest import GTDetector, SynthVideo


class HeadFactory:
    """Predictor factory honouring the spec's head: the simulated backbone (one per process) + the stored head.

    Picklable: training jobs run in a spawned child process (`backend.jobs.child`), which receives it.
    `fault` (set between jobs) makes the next training process misbehave: the factory builds the
    training backbone in the child, and there (never in the test process) it replaces
    `model.training.loop.train_head` (see FAULTS).
    """

    def __init__(self, video: SynthVideo, fault: str | None = None, **simulation: Any) -> None:
        self.video, self.fault, self.simulation = video, fault, simulation
        self._backbone: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_backbone": None}  # each process builds its own

    def __call__(self, spec: Any) -> Any:
        from model.pipeline.predictor import Predictor, load_head
        from model.testing.simulated import SimulatedBackbone, SimulationConfig

        torch.set_num_threads(1)  # as tests.backend.conftest: small tensors, 2 shared cores
        if self.fault is not None and multiprocessing.parent_process() is not None:  # only in a job process
            FAULTS[self.fault]()
        if self._backbone is None:
            self._backbone = SimulatedBackbone(self.video.gt, seed=0, config=SimulationConfig(**self.simulation))
        head, version = load_head(spec.head, self._backbone.name) if spec.head else (None, None)
        return Predictor(self._backbone, head, head_version=version, detector=GTDetector(self.video))


def head_factory(video: SynthVideo, **simulation: Any) -> HeadFactory:
    return HeadFactory(video, **simulation)


def damage(head: Any) -> None:
    """Scales every weight of the head's correction network: a broken checkpoint that still loads."""
    with torch.no_grad():
        for p in head.pose_correction.parameters():
            p.mul_(-3.0)


def _install_damage() -> None:
    """The real training, then the head's correction weights wrecked before it is written."""
    import model.training.loop as loop

    real = getattr(loop.train_head, "real", loop.train_head)

    def damaged_training(head: Any, *args: Any, **kwargs: Any) -> Any:
        result = real(head, *args, **kwargs)
        damage(head)
        return result

    damaged_training.real = real  # type: ignore[attr-defined]
    loop.train_head = damaged_training


def _install_death() -> None:
    """The training raises at its first progress report (epoch 1, step 1)."""
    import model.training.loop as loop

    real = getattr(loop.train_head, "real", loop.train_head)

    def dying(head: Any, *args: Any, progress: Any = None, **kwargs: Any) -> Any:
        def report(epoch: int, step: int, loss: float) -> None:
            progress(epoch, step, loss)
            raise RuntimeError("worker killed during epoch 1")

        return real(head, *args, progress=report, **kwargs)

    dying.real = real  # type: ignore[attr-defined]
    loop.train_head = dying


def _install_nan_heatmaps() -> None:
    """The backbone's heatmaps of one joint are NaN (a half-precision overflow): the loss becomes NaN."""
    from model.testing.simulated import SimulatedBackbone

    real = getattr(SimulatedBackbone.heatmaps, "real", SimulatedBackbone.heatmaps)

    def nan_heatmaps(self: Any, *args: Any) -> Any:
        out = real(self, *args)
        out[:, 3] = float("nan")
        return out

    nan_heatmaps.real = real  # type: ignore[attr-defined]
    SimulatedBackbone.heatmaps = nan_heatmaps  # type: ignore[method-assign]


FAULTS = {"damage": _install_damage, "die": _install_death, "nan": _install_nan_heatmaps}
