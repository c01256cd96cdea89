"""Object detection (YOLOv7-tiny on VOC): YOLOv7's loss for training, VOC mAP@0.5/0.75 for evaluation.

Batches are ``(images, targets, metas)`` (docs/architecture.md, "Detection batches"). Evaluation decodes,
runs per-class NMS with a box kept once per class above ``conf_thres`` (``multi_label``, as YOLOv7's
test.py scores mAP), maps the boxes back to the original images (undoing the letterbox), gathers the
per-image detections of every rank, scores them on rank 0 with the VOC all-point AP (primary, the
paper's Eq. 20) and, on the same detections, COCO's 101-point AP through pycocotools, and broadcasts the
metrics, or rank 0's scoring error, which every rank then raises (no rank is left waiting in the
broadcast until the process group's timeout, ``trainer.dist_timeout_min``, for a rank 0 that gave up).
Training multiplies the gradient of YOLOv7's loss by the world size (YOLOv7's rule), so that DDP's
gradient average equals one process's gradient on the global batch; the loss value itself stays one
process's, so the logged loss (the mean over ranks) reads the same at any world size.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from experiments.tasks.detection.loss import YoloLoss
from experiments.tasks.detection.postprocess import decode, nms
from experiments.tasks.detection.voc_map import coco_map, voc_map
from experiments.train.task import EvalContext

Batch = tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]
SCORING_ERROR = "scoring_error"  # the key of rank 0's broadcast when its scoring raised (never a metric)


def unwrap(model: nn.Module) -> nn.Module:
    """The detector inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        for attr in ("module", "_orig_mod"):
            inner = getattr(model, attr, None)
            if isinstance(inner, nn.Module):
                model = inner
                break
        else:
            return model


def world_size() -> int:
    """Processes in the default group (1 without one)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


class _ScaleGrad(torch.autograd.Function):
    """The identity forward; the gradient times ``factor`` backward."""

    @staticmethod
    def forward(ctx, value: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.factor, None


def scale_grad(value: torch.Tensor, factor: float) -> torch.Tensor:
    """``value`` unchanged, with its gradient multiplied by ``factor`` (the identity for factor 1)."""
    return value if factor == 1 else _ScaleGrad.apply(value, factor)


def batch_to_host(dets: list[torch.Tensor]) -> list[np.ndarray]:
    """Per-image (n, 6) detections as float32 arrays with one device-to-host copy for the whole batch."""
    if not dets:
        return []
    sizes = [len(d) for d in dets]  # shapes: known on the host after NMS
    flat = torch.cat([d.float() for d in dets]).cpu().numpy()
    return np.split(flat, np.cumsum(sizes)[:-1])


def to_original(dets: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Map (n, 6) detections from letterboxed-input pixels back to the original image, clipped to it."""
    out = dets.astype(np.float64, copy=True)
    (left, top), scale = meta["pad"], meta["scale"]
    out[:, [0, 2]] = (out[:, [0, 2]] - left) / scale
    out[:, [1, 3]] = (out[:, [1, 3]] - top) / scale
    h, w = meta["orig_size"]
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


class DetectionTask:
    """YOLO detection: ``loss`` via ``YoloLoss``, ``evaluate`` -> map50, map75, coco_map50, coco_map75."""

    name = "detection"
    primary_metric = "map50"
    higher_is_better = True

    def __init__(
        self,
        num_classes: int = 20,
        img_size: int = 320,
        assigner: str = "ota",
        conf_thres: float = 0.001,
        iou_thres: float = 0.65,
        max_det: int = 300,
        multi_label: bool = True,
        coco_metrics: bool = True,
        loss: dict[str, Any] | None = None,
    ) -> None:
        if assigner not in ("ota", "ratio"):
            raise ValueError(
                f"Unknown assigner {assigner!r}; choose 'ota' (YOLOv7-tiny's default) or 'ratio'."
            )
        self.num_classes = num_classes
        self.img_size = img_size
        self.assigner = assigner
        self.conf_thres, self.iou_thres, self.max_det = conf_thres, iou_thres, max_det
        self.multi_label = multi_label
        self.coco_metrics = coco_metrics
        self.loss_kwargs = dict(loss or {})
        self._loss_fn: YoloLoss | None = None
        self.last_parts: dict[str, torch.Tensor] = {}

    # -- batches ---------------------------------------------------------------------------------
    def collate(self, samples: list[Any]) -> Batch:
        """Items ``(image uint8, (targets (n, 5), meta))`` -> float images in [0, 1], (N, 6) targets, metas."""
        images, targets, metas = [], [], []
        for i, (image, (target, meta)) in enumerate(samples):
            images.append(image)
            targets.append(torch.cat([torch.full((len(target), 1), float(i)), target.float()], dim=1))
            metas.append(meta)
        batch_images = torch.stack(images).float().div_(255.0)
        return batch_images, torch.cat(targets).reshape(-1, 6), metas

    def to_device(self, batch: Batch, device: torch.device, channels_last: bool = False) -> Batch:
        images, targets, metas = batch
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, targets.to(device, non_blocking=True), metas

    def batch_size(self, batch: Batch) -> int:
        return int(batch[0].shape[0])

    # -- training --------------------------------------------------------------------------------
    def loss_fn(self, model: nn.Module) -> YoloLoss:
        """YOLOv7's loss for ``model``'s anchors and strides (built once, on first use)."""
        if self._loss_fn is None:
            net = unwrap(model)
            self._loss_fn = YoloLoss(
                net.anchors, net.strides, self.num_classes, img_size=self.img_size, assigner=self.assigner,
                **self.loss_kwargs,
            )  # fmt: skip
        return self._loss_fn

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """YOLOv7's loss, its gradient times the number of processes: DDP averages gradients over ranks,
        and YOLOv7 (train.py) multiplies by world_size so that N processes step like one with the global
        batch. Only the gradient: the value stays this process's loss, so the Trainer's logged loss (the
        mean over ranks) is the single-process value, not world_size times it."""
        images, targets, _ = batch
        preds = model(images)
        loss, parts = self.loss_fn(model)([p.float() for p in preds], targets)
        self.last_parts = parts  # detached box/obj/cls terms, for whoever wants to log them
        return scale_grad(loss, float(world_size()))

    has_sampled_loss = False  # the paper does not run SophiaG on detection (the trainer refuses it up front)

    def sampled_loss(self, model: nn.Module, batch: Batch) -> torch.Tensor | None:
        return None

    # -- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
        """Per image an (n, 6) tensor x1, y1, x2, y2, score, class in input pixels."""
        net = unwrap(model)
        preds = model(images)
        decoded = decode([p.float() for p in preds], net.anchors, net.strides)
        return nms(decoded, self.conf_thres, self.iou_thres, self.max_det, multi_label=self.multi_label)

    def evaluate(self, model: nn.Module, loader: Iterable, ctx: EvalContext) -> dict[str, float]:
        """Detections of every rank are gathered, scored on rank 0 alone (the VOC and COCO matching is CPU
        work that would otherwise repeat on every rank) and the metrics broadcast to all ranks."""
        records: list[tuple[str, np.ndarray, dict[str, Any]]] = []
        for batch in ctx.progress(loader):
            images, _, metas = self.to_device(batch, ctx.device)
            with ctx.autocast():
                dets = self.predict(model, images)
            for det, meta in zip(batch_to_host(dets), metas):
                gt = {k: meta[k] for k in ("boxes", "labels", "difficult")}
                records.append((meta["image_id"], to_original(det, meta), gt))
        parts = ctx.all_gather_object(records)
        metrics, error = None, None
        if ctx.rank == 0:
            try:
                metrics = self.score(parts)
            except Exception as exc:  # every rank must learn of it, or they wait out the timeout
                first = (str(exc).strip().splitlines() or [""])[0]
                error, metrics = exc, {SCORING_ERROR: f"{type(exc).__name__}: {first}"}
        metrics = ctx.broadcast_object(metrics)
        if error is not None:
            raise error
        if SCORING_ERROR in metrics:
            raise RuntimeError(f"detection scoring failed on rank 0: {metrics[SCORING_ERROR]}")
        return metrics

    def score(self, parts: list[list[tuple[str, np.ndarray, dict[str, Any]]]]) -> dict[str, float]:
        """VOC (and COCO) mAP over the gathered records; a DistributedSampler's padding repeats images,
        so each image id counts once."""
        unique = {image_id: (det, gt) for part in parts for image_id, det, gt in part}
        ordered = [unique[k] for k in sorted(unique)]
        detections, ground_truths = [d for d, _ in ordered], [g for _, g in ordered]
        voc = voc_map(detections, ground_truths, self.num_classes)
        metrics = {"map50": voc[0.5], "map75": voc[0.75]}
        if self.coco_metrics:
            coco = coco_map(detections, ground_truths, self.num_classes, max_det=self.max_det)
            metrics.update(coco_map50=coco[0.5], coco_map75=coco[0.75])
        return metrics
