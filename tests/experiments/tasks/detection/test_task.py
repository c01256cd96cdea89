"""DetectionTask: batches, the letterbox undo, evaluation (single process and sharded), loss, configs.

Detection evaluation in YOLOv7's mAP mode (test.py calls non_max_suppression with multi_label=True):
each box yields one detection per class whose obj x cls score is > conf_thres (YOLOv7 compares
strictly), then NMS per class. Checked against a by-hand definition on hand-made boxes."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Subset

from data import build_datasets
from data.fixtures import write_fixture
from experiments.tasks import EvalContext, Task, build_task
from experiments.tasks.detection.boxes import box_iou, xywh_to_xyxy
from experiments.tasks.detection.postprocess import nms
from experiments.tasks.detection.task import DetectionTask, to_original
from models import build_model
from tests.helpers import ROOT

# ---------------------------------------------------------------- from test_detection_task.py: DetectionTask: batches, the letterbox undo, evaluation (single process and shard


SIZE = 64


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = write_fixture("voc", tmp_path_factory.mktemp("voc"))
    return build_datasets("voc", root=str(root), img_size=SIZE, augment=False)


def xyxy(targets: torch.Tensor) -> np.ndarray:
    t = targets.numpy()
    return np.concatenate([t[:, 2:4] - t[:, 4:6] / 2, t[:, 2:4] + t[:, 4:6] / 2], axis=1)


def test_protocol_and_registry():
    task = build_task("detection", num_classes=20)
    assert isinstance(task, Task) and isinstance(task, DetectionTask)
    assert task.primary_metric == "map50" and task.higher_is_better
    with pytest.raises(ValueError, match="assigner"):
        build_task("detection", num_classes=20, assigner="hungarian")


def test_collate_layout(bundle):
    task = DetectionTask(img_size=SIZE)
    samples = [bundle.eval[i] for i in range(3)]
    images, targets, metas = task.collate(samples)
    assert images.shape == (3, 3, SIZE, SIZE) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.5
    assert targets.shape == (sum(len(s[1][0]) for s in samples), 6)
    counts = [len(s[1][0]) for s in samples]
    assert targets[:, 0].tolist() == [float(i) for i, n in enumerate(counts) for _ in range(n)]
    assert len(metas) == 3 and metas[1]["image_id"] == samples[1][1][1]["image_id"]
    assert task.batch_size((images, targets, metas)) == 3
    moved = task.to_device((images, targets, metas), torch.device("cpu"), channels_last=True)
    assert moved[0].is_contiguous(memory_format=torch.channels_last)


def test_to_original_undoes_the_letterbox(bundle):
    for i in range(len(bundle.eval)):
        _, (targets, meta) = bundle.eval[i]  # eval keeps every object, in file order
        dets = np.column_stack(
            [xyxy(torch.cat([torch.zeros(len(targets), 1), targets], 1)), np.ones((len(targets), 2))]
        )
        back = to_original(dets, meta)
        np.testing.assert_allclose(back[:, :4], meta["boxes"], atol=1e-3)


class OracleModel(nn.Module):
    """Replays given per-image detections batch by batch (the task's predict is patched to use it)."""

    def __init__(self, per_batch: list[list[torch.Tensor]]) -> None:
        super().__init__()
        self.per_batch = list(per_batch)

    def forward(self, images):
        return self.per_batch.pop(0)


class OracleTask(DetectionTask):
    def predict(self, model, images):
        return model(images)


def oracle_detections(loader, drop_first: bool = False) -> list[list[torch.Tensor]]:
    out = []
    for images, targets, _ in loader:
        batch = []
        for i in range(len(images)):
            t = targets[targets[:, 0] == i]
            boxes = torch.from_numpy(xyxy(t))
            score = torch.linspace(0.9, 0.5, len(t))
            det = torch.cat([boxes, score[:, None], t[:, 1:2]], dim=1)
            batch.append(det[1:] if drop_first and i == 0 else det)
        out.append(batch)
    return out


def test_evaluate_oracle_scores_one_and_sharding_changes_nothing(bundle):
    task = OracleTask(img_size=SIZE)
    cpu = EvalContext(device=torch.device("cpu"))
    loader = DataLoader(bundle.eval, batch_size=3, collate_fn=task.collate)
    perfect = task.evaluate(OracleModel(oracle_detections(loader)), loader, cpu)
    assert perfect == pytest.approx({"map50": 1.0, "map75": 1.0, "coco_map50": 1.0, "coco_map75": 1.0})

    full = task.evaluate(OracleModel(oracle_detections(loader, drop_first=True)), loader, cpu)
    assert full["map50"] < 1.0
    # two "ranks", each with half the images; rank 1's records reach rank 0 through all_gather_object
    halves = [Subset(bundle.eval, [0, 2]), Subset(bundle.eval, [1, 3])]
    loaders = [DataLoader(h, batch_size=3, collate_fn=task.collate) for h in halves]
    gathered = []
    rank1 = EvalContext(
        device=torch.device("cpu"), all_gather_object=lambda obj: gathered.append(obj) or [obj]
    )
    task.evaluate(OracleModel(oracle_detections(loaders[1])), loaders[1], rank1)
    rank0 = EvalContext(device=torch.device("cpu"), all_gather_object=lambda obj: [obj, *gathered])
    sharded = task.evaluate(OracleModel(oracle_detections(loaders[0], drop_first=True)), loaders[0], rank0)
    assert sharded == pytest.approx(full)


def test_only_rank0_scores_and_the_metrics_are_broadcast(bundle, monkeypatch):
    import experiments.tasks.detection.task as detection

    task = OracleTask(img_size=SIZE)
    loader = DataLoader(bundle.eval, batch_size=3, collate_fn=task.collate)
    scored = []
    real = detection.voc_map
    monkeypatch.setattr(detection, "voc_map", lambda *a, **k: scored.append(1) or real(*a, **k))
    sent = {"map50": 0.5, "map75": 0.25}
    rank1 = EvalContext(device=torch.device("cpu"), rank=1, broadcast_object=lambda obj: obj or sent)
    assert task.evaluate(OracleModel(oracle_detections(loader)), loader, rank1) == sent
    assert scored == []  # rank 1 left the matching to rank 0
    broadcast = []
    rank0 = EvalContext(
        device=torch.device("cpu"), rank=0, broadcast_object=lambda obj: broadcast.append(obj) or obj
    )
    metrics = task.evaluate(OracleModel(oracle_detections(loader)), loader, rank0)
    assert scored == [1] and broadcast == [metrics] and metrics["map50"] == pytest.approx(1.0)


def test_batch_to_host_splits_one_copy_per_image():
    from experiments.tasks.detection.task import batch_to_host

    dets = [torch.rand(3, 6), torch.zeros(0, 6), torch.rand(1, 6, dtype=torch.float64)]
    host = batch_to_host(dets)
    assert [h.shape for h in host] == [(3, 6), (0, 6), (1, 6)]
    for h, d in zip(host, dets):
        np.testing.assert_array_equal(h, d.float().numpy())
    assert batch_to_host([]) == []


@pytest.mark.parametrize("assigner", ["ota", "ratio"])
def test_loss_through_a_wrapper(bundle, assigner):
    torch.manual_seed(0)
    task = build_task("detection", num_classes=20, img_size=SIZE, assigner=assigner)
    model = build_model("yolov7_tiny", num_classes=20, img_size=SIZE)
    batch = task.collate([bundle.train[i] for i in range(2)])

    class Wrapper(nn.Module):  # what DDP looks like from outside: the detector is .module
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x):
            return self.module(x)

    loss = task.loss(Wrapper(model), batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert all(p.grad is not None for p in model.detect.parameters())
    assert set(task.last_parts) == {"box", "obj", "cls"}
    assert task.sampled_loss(model, batch) is None


def test_evaluate_with_the_real_model(bundle):
    torch.manual_seed(0)
    task = build_task("detection", num_classes=20, img_size=SIZE)
    model = build_model("yolov7_tiny", num_classes=20, img_size=SIZE).eval()
    loader = DataLoader(Subset(bundle.eval, range(2)), batch_size=2, collate_fn=task.collate)
    with torch.no_grad():
        metrics = task.evaluate(model, loader, EvalContext(device=torch.device("cpu")))
    assert set(metrics) == {"map50", "map75", "coco_map50", "coco_map75"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


def test_configs_build_the_task_and_data(bundle, tmp_path):
    dataset_cfg = OmegaConf.load(ROOT / "configs/dataset/voc.yaml")
    task_cfg = OmegaConf.load(ROOT / "configs/task/detection.yaml")
    cfg = OmegaConf.create({"dataset": dataset_cfg, "task": task_cfg})
    cfg.dataset.root = bundle.info["root"]
    resolved = OmegaConf.to_container(cfg, resolve=True)
    loader_keys = {"name", "batch_size", "eval_batch_size", "num_workers", "drop_last"}
    data_kwargs = {k: v for k, v in resolved["dataset"].items() if k not in loader_keys}
    built = build_datasets("voc", **data_kwargs)
    assert built.info["img_size"] == 320 == resolved["task"]["img_size"]
    task_kwargs = {k: v for k, v in resolved["task"].items() if k != "name"}
    task = build_task(resolved["task"]["name"], num_classes=built.num_classes, **task_kwargs)
    assert (task.conf_thres, task.iou_thres, task.max_det, task.assigner) == (0.001, 0.65, 300, "ota")
    model_cfg = (ROOT / "configs/model/yolov7_tiny.yaml").read_text()
    assert "override /dataset: voc" in model_cfg and "override /task: detection" in model_cfg
    for table in ("table5", "table9"):
        exp = OmegaConf.load(ROOT / f"configs/experiment/{table}.yaml")
        assert exp.schedule.t1 == 25680 and exp.schedule.min_lr == 3e-5 and exp.trainer.epochs == 80
        assert exp.dataset.batch_size == 32
        assert {v.optimizer.lr for v in exp.per_optimizer.values()} == {3e-3}


# ---------------------------------------------------------------- from test_detection_multilabel.py: Detection evaluation in YOLOv7's mAP mode (test.py calls non_max_suppression wit


def by_definition(decoded, conf_thres, iou_thres, max_det):
    """Every (box, class) with obj > t and obj * cls > t, greedy NMS within each class, best max_det."""
    x = decoded[0]
    boxes = xywh_to_xyxy(x[:, :4])
    kept = []
    for c in range(x.shape[1] - 5):
        cand = [(float(x[i, 4] * x[i, 5 + c]), i) for i in range(len(x))]
        cand = sorted((s, i) for s, i in cand if x[i, 4] > conf_thres and s > conf_thres)[::-1]
        chosen = []
        for s, i in cand:
            if all(box_iou(boxes[i : i + 1], boxes[j : j + 1]).item() <= iou_thres for _, j in chosen):
                chosen.append((s, i))
        kept += [(s, i, c) for s, i in chosen]
    kept = sorted(kept, reverse=True)[:max_det]
    return [(i, c, round(s, 6)) for s, i, c in kept]


def as_rows(dets, decoded):
    boxes = xywh_to_xyxy(decoded[0, :, :4])
    rows = []
    for d in dets[0]:
        i = int(((boxes - d[:4]).abs().sum(1)).argmin())
        rows.append((i, int(d[5]), round(float(d[4]), 6)))
    return rows


def test_multi_label_equals_the_definition_on_hand_made_boxes():
    # box: cx, cy, w, h, objectness, 3 class probabilities
    decoded = torch.tensor(
        [
            [
                [50, 50, 40, 40, 0.9, 0.8, 0.7, 0.01],  # two classes above threshold
                [52, 51, 40, 40, 0.8, 0.85, 0.1, 0.5],  # overlaps box 0: suppressed in class 0 only
                [150, 150, 30, 30, 0.5, 0.5, 0.5, 0.2],  # 0.25 == conf_thres: not kept (strict >)
                [200, 40, 20, 20, 0.2, 0.9, 0.9, 0.9],  # objectness below the threshold
                [100, 100, 10, 10, 0.6, 0.3, 0.65, 0.6],  # two detections: 0.18 is below
            ]
        ]
    )
    conf, iou = 0.25, 0.5
    got = as_rows(nms(decoded, conf, iou, max_det=300, multi_label=True), decoded)
    want = by_definition(decoded, conf, iou, 300)
    assert got == want
    assert {(i, c) for i, c, _ in got} == {(0, 0), (0, 1), (1, 2), (4, 1), (4, 2)}
    # best-class mode keeps one detection per box
    single = as_rows(nms(decoded, conf, iou, max_det=300, multi_label=False), decoded)
    assert [(i, c) for i, c, _ in single] == [(0, 0), (4, 1)]


def test_multi_label_equals_the_definition_on_random_boxes():
    g = torch.Generator().manual_seed(0)
    n, nc = 60, 4
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 40 + 5
    probs = torch.rand(n, 1 + nc, generator=g)
    decoded = torch.cat([xy, wh, probs], 1)[None]
    for max_det in (300, 7):
        got = as_rows(nms(decoded, 0.2, 0.45, max_det=max_det, multi_label=True), decoded)
        assert got == by_definition(decoded, 0.2, 0.45, max_det)


def test_detection_task_evaluates_in_multi_label_mode_by_default():
    assert DetectionTask(num_classes=3).multi_label is True


def test_one_process_gets_the_plain_loss_gradient(bundle):
    """Without a process group the gradient is not scaled: the task's loss backpropagates exactly the
    YOLO loss's gradient (DDP's world_size factor is 1)."""
    torch.manual_seed(0)
    task = build_task("detection", num_classes=20, img_size=SIZE, assigner="ratio")
    model = build_model("yolov7_tiny", num_classes=20, img_size=SIZE)
    batch = task.collate([bundle.train[i] for i in range(2)])
    task.loss(model, batch).backward()
    via_task = [p.grad.clone() for p in model.detect.parameters()]
    model.zero_grad(set_to_none=True)
    preds = model(batch[0])
    task.loss_fn(model)([p.float() for p in preds], batch[1])[0].backward()
    for a, b in zip(via_task, model.detect.parameters(), strict=True):
        torch.testing.assert_close(a, b.grad, rtol=0, atol=0)


def test_default_thresholds_are_yolov7_test_py():
    """YOLOv7's test.py scores mAP with conf_thres 0.001, iou_thres 0.65 and at most 300 detections."""
    task = DetectionTask()
    assert (task.conf_thres, task.iou_thres, task.max_det, task.multi_label) == (0.001, 0.65, 300, True)
