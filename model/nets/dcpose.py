"""DCPose (Liu et al., CVPR 2021): HRNet rough poses refined by a temporal head with DCNv2.

Architecture and key names follow the released `DcPose_RSN` (the released DCPose code§4), so the
official checkpoint ``PoseTrack17_DCPose.pth`` loads with ``strict=True``:

- ``rough_pose_estimation_net``: HRNet, one pass over [current; previous; next] crops (frozen).
- ``diff_temporal_fuse``: `PoseResidualFusion` (PRF), RSB chain 4K -> 2K on heatmap differences.
- ``support_temporal_fuse``: `PoseTemporalMerger` (PTM), RSB chain 3K -> K on weighted heatmaps.
- ``offset_mask_combine_conv``, ``offsets_list``, ``masks_list``, ``modulated_deform_conv_list``:
  `PoseCorrectionNetwork` (PCN), five DCNv2 branches that warp the PTM output.

Flat keys vs paper names: the PCN is a real submodule (``DCPose.pose_correction``) so that its
forward, parameters and ``.to()`` behave normally, but the release stores its four parts at the
top level. A state-dict post-hook drops the ``pose_correction.`` prefix and a load pre-hook adds it
back, so ``state_dict()`` / ``load_state_dict()`` speak the released keys while
``named_parameters()`` shows the module tree (``pose_correction.offsets_list.0.0.weight``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.nets.blocks import ChainOfRSBBlocks, ModulatedDeformConv

logger = logging.getLogger(__name__)

DILATIONS: tuple[int, ...] = (3, 6, 9, 12, 15)  # PCN branches (the released DCPose code)
_PCN_ATTR = "pose_correction"
_PCN_PARTS = ("offset_mask_combine_conv", "offsets_list", "masks_list", "modulated_deform_conv_list")


def temporal_weights(margin: Tensor | None, batch: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Weights of the previous and next frame from their distances (the released DCPose code).

    Args:
        margin: (B, 2) = (margin_left, margin_right): frame distance to the previous / next frame.
            None means (1, 1).
        batch: expected B.
        like: tensor whose dtype/device the weights take.

    Returns:
        (w_prev, w_next), each (B, 1, 1, 1): w_prev = right / (left + right), w_next = left / (...),
        so the closer frame weighs more (p=1, n=3 -> 0.75 / 0.25).
    """
    if margin is None:
        half = torch.full((batch, 1, 1, 1), 0.5, dtype=like.dtype, device=like.device)
        return half, half
    if margin.dim() != 2 or margin.shape != (batch, 2):
        raise ValueError(f"margin must have shape (B, 2) = ({batch}, 2), got {tuple(margin.shape)}")
    margin = margin.to(dtype=like.dtype, device=like.device)
    left, right = margin[:, 0], margin[:, 1]
    interval = left + right
    if bool((left < 0).any() or (right < 0).any() or (interval <= 0).any()):
        raise ValueError(f"margins must be >= 0 with a positive sum, got {margin.tolist()}")
    return (right / interval).view(batch, 1, 1, 1), (left / interval).view(batch, 1, 1, 1)


def _check_heatmaps(current: Tensor, previous: Tensor, next_: Tensor) -> None:
    if current.dim() != 4 or previous.shape != current.shape or next_.shape != current.shape:
        raise ValueError(
            "current/previous/next heatmaps must all be (B, K, H, W) of one shape, got "
            f"{tuple(current.shape)}, {tuple(previous.shape)}, {tuple(next_.shape)}"
        )


def residual_fusion_input(current: Tensor, previous: Tensor, next_: Tensor, margin: Tensor | None) -> Tensor:
    """PRF input (B, 4K, H, W), joint-major: channel 4j+k = [dA_j, dA_j*w_prev, dB_j, dB_j*w_next][k].

    dA = current - previous, dB = current - next; inputs are (B, K, H, W) heatmaps.
    """
    _check_heatmaps(current, previous, next_)
    b, k, h, w = current.shape
    w_prev, w_next = temporal_weights(margin, b, current)
    diff_a, diff_b = current - previous, current - next_
    return torch.stack((diff_a, diff_a * w_prev, diff_b, diff_b * w_next), dim=2).view(b, 4 * k, h, w)


def temporal_merger_input(current: Tensor, previous: Tensor, next_: Tensor, margin: Tensor | None) -> Tensor:
    """PTM input (B, 3K, H, W), joint-major: channel 3j+k = [Hc_j, Hp_j*w_prev, Hn_j*w_next][k]."""
    _check_heatmaps(current, previous, next_)
    b, k, h, w = current.shape
    w_prev, w_next = temporal_weights(margin, b, current)
    return torch.stack((current, previous * w_prev, next_ * w_next), dim=2).view(b, 3 * k, h, w)


class PoseResidualFusion(ChainOfRSBBlocks):
    """PRF (DCPose paper §3.2, "pose residual fusion"): motion features from weighted heatmap residuals.

    Released as an RSB chain 4K -> 2K with 2 blocks (keys ``diff_temporal_fuse.layers.*``).
    """

    def __init__(self, num_joints: int = 17, out_channels: int | None = None, num_blocks: int = 2) -> None:
        super().__init__(4 * num_joints, out_channels or 2 * num_joints, num_blocks)
        self.num_joints = num_joints

    def forward(
        self,
        current: Tensor,
        previous: Tensor,
        next_: Tensor,  # type: ignore[override]
        margin: Tensor | None,
    ) -> Tensor:
        """(B, K, H, W) heatmaps x3 and (B, 2) margins -> (B, 2K, H, W) motion features."""
        return super().forward(residual_fusion_input(current, previous, next_, margin))


class PoseTemporalMerger(ChainOfRSBBlocks):
    """PTM (DCPose paper §3.1, "pose temporal merger"): support heatmaps from weighted neighbours.

    Released as an RSB chain 3K -> K with 1 block (keys ``support_temporal_fuse.layers.*``).
    """

    def __init__(self, num_joints: int = 17, num_blocks: int = 1) -> None:
        super().__init__(3 * num_joints, num_joints, num_blocks)
        self.num_joints = num_joints

    def forward(
        self,
        current: Tensor,
        previous: Tensor,
        next_: Tensor,  # type: ignore[override]
        margin: Tensor | None,
    ) -> Tensor:
        """(B, K, H, W) heatmaps x3 and (B, 2) margins -> (B, K, H, W) support heatmaps."""
        return super().forward(temporal_merger_input(current, previous, next_, margin))


class _DeformUnit(nn.Module):
    """Holds one DCNv2 under the released name ``deform_conv`` (key ``...{i}.deform_conv.weight``)."""

    def __init__(self, channels: int, dilation: int, kernel_size: int) -> None:
        super().__init__()
        self.deform_conv = ModulatedDeformConv(
            channels,
            channels,
            kernel_size,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            deformable_groups=channels,
            bias=True,
        )

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        return self.deform_conv(x, offset, mask)


class PoseCorrectionNetwork(nn.Module):
    """PCN (DCPose paper §3.3, "pose correction network"): DCNv2 warps of the support heatmaps.

    The combiner (RSB chain PRF+PTM -> 64) gives features F; per dilation d a 3x3 conv predicts
    offsets (2*K*9 ch) and one predicts raw masks (K*9 ch, no sigmoid, as released); a 17->17 DCNv2
    with K deformable groups warps the PTM output; the branch outputs are averaged.
    """

    def __init__(
        self,
        num_joints: int = 17,
        motion_channels: int | None = None,
        hidden_channels: int = 64,
        combiner_blocks: int = 2,
        dilations: Sequence[int] = DILATIONS,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        motion_channels = motion_channels or 2 * num_joints
        taps = kernel_size * kernel_size
        self.num_joints = num_joints
        self.dilations = tuple(dilations)
        if not self.dilations:
            raise ValueError("PoseCorrectionNetwork needs at least one dilation")
        self.offset_mask_combine_conv = ChainOfRSBBlocks(
            motion_channels + num_joints, hidden_channels, combiner_blocks
        )

        def head_conv(out_channels: int, d: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(
                    hidden_channels,
                    out_channels,
                    kernel_size,
                    padding=d * (kernel_size // 2),
                    dilation=d,
                    bias=False,
                )
            )

        self.offsets_list = nn.ModuleList(head_conv(2 * num_joints * taps, d) for d in self.dilations)
        self.masks_list = nn.ModuleList(head_conv(num_joints * taps, d) for d in self.dilations)
        self.modulated_deform_conv_list = nn.ModuleList(
            _DeformUnit(num_joints, d, kernel_size) for d in self.dilations
        )
        self.fuse_offset_mask = True  # one conv per branch for offsets + masks (see _offset_and_mask)

    def forward(self, motion: Tensor, support: Tensor) -> Tensor:
        """motion: (B, 2K, H, W) PRF output; support: (B, K, H, W) PTM output -> (B, K, H, W)."""
        features = self.offset_mask_combine_conv(torch.cat((motion, support), dim=1))  # (B, 64, H, W)
        scale = 1.0 / len(self.dilations)  # 0.2 for the released 5 branches
        branches = zip(self.offsets_list, self.masks_list, self.modulated_deform_conv_list, strict=True)
        out = None
        for off, mask, dcn in branches:
            offset, raw_mask = self._offset_and_mask(features, off[0], mask[0])
            warped = scale * dcn(support, offset, raw_mask)
            out = warped if out is None else out + warped
        return out  # sum_i 0.2 * warped_i, as released

    def _offset_and_mask(self, features: Tensor, off: nn.Conv2d, mask: nn.Conv2d) -> tuple[Tensor, Tensor]:
        """Both predictions of one branch, as one convolution when `fuse_offset_mask` is set.

        The two convolutions read the same features with the same dilation, so stacking their
        weights (2K*9 + K*9 = 459 output channels) gives the same values in one pass over the
        features (one im2col / one GEMM instead of two); the parameters stay the released ones.
        """
        if not self.fuse_offset_mask:
            return off(features), mask(features)
        weight = torch.cat((off.weight, mask.weight), dim=0)
        both = F.conv2d(features, weight, None, off.stride, off.padding, off.dilation)
        return both.split((off.out_channels, mask.out_channels), dim=1)


def init_dcpose_weights(module: nn.Module) -> None:
    """Released initialisation (the released DCPose code): convs N(0, 0.001) bias 0, BN 1/0, DCN identity."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.001)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, ModulatedDeformConv):
            m.init_identity()


class DCPose(nn.Module):
    """DCPose: rough heatmaps of three frames from a backbone, refined by PRF + PTM + PCN.

    Args:
        backbone: heatmap network (B, 3, H, W) -> (B, K, H/4, W/4) (HRNet), stored as
            ``rough_pose_estimation_net``; None builds the head alone (use `refine`).
        num_joints: K.
        frozen_backbone: freeze the backbone (requires_grad False, kept in eval mode), as released.
        dilations: PCN branch dilations.
    """

    def __init__(
        self,
        backbone: nn.Module | None,
        num_joints: int = 17,
        *,
        frozen_backbone: bool = True,
        dilations: Sequence[int] = DILATIONS,
    ) -> None:
        super().__init__()
        self.num_joints = num_joints
        self.rough_pose_estimation_net = backbone
        self.diff_temporal_fuse = PoseResidualFusion(num_joints)
        self.support_temporal_fuse = PoseTemporalMerger(num_joints)
        self.pose_correction = PoseCorrectionNetwork(num_joints, dilations=dilations)
        self._backbone_frozen = False
        self.register_state_dict_post_hook(_flatten_pcn_keys)
        self.register_load_state_dict_pre_hook(_nest_pcn_keys)
        for part in (self.diff_temporal_fuse, self.support_temporal_fuse, self.pose_correction):
            init_dcpose_weights(part)  # the backbone keeps its weights (it may be pretrained)
        self.freeze_backbone(frozen_backbone)

    @property
    def backbone(self) -> nn.Module | None:
        """The rough pose estimator (``rough_pose_estimation_net``)."""
        return self.rough_pose_estimation_net

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of PRF, PTM and PCN (what DCPose trains)."""
        for part in (self.diff_temporal_fuse, self.support_temporal_fuse, self.pose_correction):
            yield from part.parameters()

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) the backbone: requires_grad, and eval mode while frozen."""
        self._backbone_frozen = frozen
        if self.rough_pose_estimation_net is None:
            return
        for p in self.rough_pose_estimation_net.parameters():
            p.requires_grad_(not frozen)
        if frozen:
            self.rough_pose_estimation_net.eval()
        else:
            self.rough_pose_estimation_net.train(self.training)

    def train(self, mode: bool = True) -> DCPose:
        """Sets train/eval mode; a frozen backbone stays in eval so its BN statistics do not drift.

        (The original code let them drift, the released DCPose code; the released buffers are loaded as-is.)
        """
        super().train(mode)
        if self._backbone_frozen and self.rough_pose_estimation_net is not None:
            self.rough_pose_estimation_net.eval()
        return self

    def backbone_heatmaps(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) normalised crops -> (N, K, H/4, W/4) rough heatmaps (no grad while frozen)."""
        if self.rough_pose_estimation_net is None:
            raise RuntimeError(
                "this DCPose was built without a backbone (backbone=None); "
                "call refine() with precomputed heatmaps instead"
            )
        if self._backbone_frozen:
            with torch.no_grad():
                return self.rough_pose_estimation_net(x)
        return self.rough_pose_estimation_net(x)

    def refine(
        self, h_current: Tensor, h_previous: Tensor, h_next: Tensor, margin: Tensor | None = None
    ) -> Tensor:
        """Temporal head on rough heatmaps.

        Args:
            h_current: (B, K, H, W) heatmaps of the current frame (H, W = 96, 72 as released).
            h_previous: (B, K, H, W) of the previous frame.
            h_next: (B, K, H, W) of the next frame.
            margin: (B, 2) float (margin_left, margin_right) frame distances; None = (1, 1).

        Returns:
            (B, K, H, W) refined heatmaps (no activation).
        """
        _check_heatmaps(h_current, h_previous, h_next)
        if h_current.shape[1] != self.num_joints:
            raise ValueError(
                f"heatmaps have {h_current.shape[1]} channels, the model {self.num_joints} joints"
            )
        motion = self.diff_temporal_fuse(h_current, h_previous, h_next, margin)  # (B, 2K, H, W)
        support = self.support_temporal_fuse(h_current, h_previous, h_next, margin)  # (B, K, H, W)
        return self.pose_correction(motion, support)

    def forward(
        self,
        current: Tensor,
        previous: Tensor,
        next: Tensor,  # the project's method vocabulary: forward(current, previous, next, margin)
        margin: Tensor | None = None,
    ) -> Tensor:
        """Refined heatmaps of the current frame.

        Args:
            current: (B, 3, H, W) normalised crop of the current frame (384x288 as released).
            previous: same-size crop of the previous frame (cut with the current frame's box).
            next: same-size crop of the next frame.
            margin: (B, 2) frame distances (margin_left, margin_right); None = (1, 1).

        Returns:
            (B, K, H/4, W/4) refined heatmaps.
        """
        if current.dim() != 4 or previous.shape != current.shape or next.shape != current.shape:
            raise ValueError(
                "current/previous/next crops must all be (B, 3, H, W) of one shape, got "
                f"{tuple(current.shape)}, {tuple(previous.shape)}, {tuple(next.shape)}"
            )
        b = current.shape[0]
        heatmaps = self.backbone_heatmaps(torch.cat((current, previous, next), dim=0))  # (3B, K, h, w)
        h_current, h_previous, h_next = heatmaps.split(b, dim=0)
        return self.refine(h_current, h_previous, h_next, margin)


def _flatten_pcn_keys(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    """State-dict post-hook: ``pose_correction.X`` -> ``X`` (released flat keys), order kept."""
    nested = prefix + _PCN_ATTR + "."
    keys = list(state_dict.keys())
    if not any(k.startswith(nested) for k in keys):
        return
    items = [(k, state_dict.pop(k)) for k in keys if k.startswith(prefix)]
    for key, value in items:
        state_dict[prefix + key[len(nested) :] if key.startswith(nested) else key] = value


def _nest_pcn_keys(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: Any,
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """Load pre-hook: released flat PCN keys -> ``pose_correction.X``."""
    flat = re.compile(re.escape(prefix) + "(" + "|".join(_PCN_PARTS) + r")\.")
    for key in [k for k in state_dict if flat.match(k)]:
        state_dict[prefix + _PCN_ATTR + "." + key[len(prefix) :]] = state_dict.pop(key)


def _make_backbone(name: str, num_joints: int) -> nn.Module:
    """Backbone by name: "hrnet_w48", "hrnet_w32" or any "hrnet_w<width>" (tiny widths for tests)."""
    match = re.fullmatch(r"hrnet_w(\d+)", name)
    if match is None:
        raise ValueError(f"unknown backbone {name!r}; expected 'hrnet_w48', 'hrnet_w32' or 'hrnet_w<width>'")
    from model.nets.hrnet import HRNet  # imported here so the head alone never needs the backbone module

    return HRNet(width=int(match.group(1)), num_joints=num_joints)


def build_dcpose(
    backbone: str | None = "hrnet_w48", num_joints: int = 17, dilations: Sequence[int] = DILATIONS
) -> DCPose:
    """DCPose with the released layout and initialisation (random weights); backbone frozen.

    Args:
        backbone: backbone name (see `_make_backbone`), or None for the head alone.
        num_joints: K (17 for PoseTrack).
        dilations: PCN branch dilations (released: 3, 6, 9, 12, 15).

    Returns:
        The model, in train mode with its backbone in eval mode.
    """
    net = None if backbone is None else _make_backbone(backbone, num_joints)
    if net is not None:
        init_dcpose_weights(net)  # the release initialises every conv/BN the same way (§2.4)
    model = DCPose(net, num_joints, dilations=dilations)
    logger.debug("built DCPose (backbone=%s, %d joints)", backbone, num_joints)
    return model
