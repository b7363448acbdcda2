"""On a CUDA GPU (skipped elsewhere; `scripts/device_check.sh` runs them on the GPU machine):
every method and `all` trains on CUDA, in float32 and under AMP (fp16, bf16), to finite losses,
gradients reach the student only and the teacher stays unchanged; the statistics the losses take
in float32 stay float32; the export round trip; `launch` with the nccl backend."""

import json
import os

import pytest
import torch
from conftest import TEACHER_YAML, make_cfg
from detectron2.engine import HookBase
from detectron2.modeling import build_model

from detkd import demo
from detkd.engine import DistillTrainer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

SURVEY = {name: e.config for name, e in demo.survey_experiments().items()}
PRECISIONS = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}


class _Record(HookBase):
    def __init__(self):
        self.rows, self.dtypes = [], set()

    def after_step(self):
        latest = self.trainer.storage.latest()
        self.rows.append({k: v for k, (v, it) in latest.items() if it == self.trainer.iter})


def _cuda_cfg(method, tmp_path, teacher_weights, precision, iters=20):
    opts = [
        "MODEL.DEVICE", "cuda", "MODEL.DISTILL.TEACHER.CONFIG_FILE", TEACHER_YAML,
        "MODEL.DISTILL.TEACHER.WEIGHTS", teacher_weights,
        "MODEL.DISTILL.TEACHER.OPTS", ["MODEL.DEVICE", "cuda"],
        "SOLVER.MAX_ITER", iters, "SOLVER.STEPS", (), "TEST.EVAL_PERIOD", 0,
        "DATASETS.TEST", (), "OUTPUT_DIR", str(tmp_path),
    ]  # fmt: skip
    if precision:
        opts += ["SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", precision]
    return make_cfg(os.path.join("configs/demo", SURVEY[method]), *opts)


@pytest.mark.parametrize("precision", sorted(PRECISIONS))
@pytest.mark.parametrize("method", sorted(SURVEY))
def test_every_method_trains_on_cuda(method, precision, tmp_path, teacher_weights):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    cfg = _cuda_cfg(method, tmp_path, teacher_weights, PRECISIONS[precision])
    trainer = DistillTrainer(cfg)
    model = trainer.model
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in model.student.named_parameters()}
    record = _Record()
    trainer.register_hooks([record])
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert len(record.rows) == 20
    for row in record.rows:
        losses = {k: v for k, v in row.items() if k.startswith("loss_")}
        assert losses and all(torch.isfinite(torch.tensor(v)) for v in losses.values()), row
    # the teacher is untouched and has no gradients; the student moved
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k
    assert all(p.grad is None for p in model.teacher.parameters())
    moved = [
        k for k, p in model.student.named_parameters() if not torch.equal(p, student_before[k])
    ]
    assert moved


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_statistics_stay_float32_under_autocast(precision, teacher_weights, tmp_path):
    if precision == "bfloat16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    from conftest import train_batch
    from detectron2.utils.events import EventStorage

    cfg = _cuda_cfg("all", tmp_path, teacher_weights, precision)
    model = build_model(cfg).train()
    with EventStorage(), torch.autocast("cuda", dtype=getattr(torch, precision)):
        losses = model(train_batch(cfg))
    distill = {
        k: v for k, v in losses.items() if not k.startswith(("loss_cls", "loss_box", "loss_rpn"))
    }
    assert distill and all(v.dtype == torch.float32 for v in distill.values()), {
        k: v.dtype for k, v in distill.items()
    }
    assert all(torch.isfinite(v) for v in distill.values())


def test_export_round_trip_on_cuda(tmp_path, teacher_weights):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg

    from detkd.engine.export import export_student

    cfg = _cuda_cfg("fgd", tmp_path, teacher_weights, None, iters=2)
    trainer = DistillTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    path = export_student(trainer.model, cfg, str(tmp_path / "export"))
    stock = get_cfg()
    stock.merge_from_file(str(tmp_path / "export" / "config_student.yaml"))
    stock.MODEL.DEVICE = "cuda"
    model = build_model(stock)
    DetectionCheckpointer(model).load(path)
    for k, v in trainer.model.student.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_training_under_an_nccl_process_group(tmp_path, teacher_weights):
    """What detectron2's launch sets up in each worker, with one GPU: an nccl process group of
    world size 1 and the local group; training runs in it (launch itself calls the function
    directly when the world size is 1, so the group is set up here)."""
    import torch.distributed as dist
    from detectron2.utils import comm

    dist.init_process_group("nccl", init_method="tcp://127.0.0.1:29517", world_size=1, rank=0)
    try:
        comm.create_local_process_group(1)
        assert dist.get_backend() == "nccl" and comm.get_world_size() == 1
        cfg = _cuda_cfg("fgd", tmp_path, teacher_weights, None, iters=3)
        trainer = DistillTrainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
        rows = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
        assert max(r["iteration"] for r in rows) == 2
    finally:
        dist.destroy_process_group()
