"""LazyConfig of the CPU demo (the same models as configs/demo/*.yaml), built from detectron2's
model-zoo LazyConfig pieces. Import ``student``, ``dataloader``, ``optimizer``, ``lr_multiplier``
and ``train`` (and ``teacher``, for methods that need one) from here and wrap the student in
``model = L(DistillRCNN)(student=student, ...)``:
the datasets are checked against ``model.student.roi_heads.num_classes`` when loaded."""

import os

from detectron2.config import LazyCall as L
from detectron2.data import transforms as T
from detectron2.evaluation import COCOEvaluator
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from detkd.data import FileNamingDatasetMapper, get_checked_dataset_dicts
from detkd.modeling import teacher_from_config

student = get_config("common/models/mask_rcnn_fpn.py").model
student.backbone.bottom_up.stem.norm = "BN"
student.backbone.bottom_up.stages.depth = 18
student.backbone.bottom_up.stages.norm = "BN"
del student.backbone.bottom_up.stages.stride_in_1x1  # BasicBlock has no such argument
student.backbone.bottom_up.freeze_at = 0
student.backbone.out_channels = 64
student.proposal_generator.head.in_channels = 64
student.roi_heads.box_head.input_shape = ShapeSpec(channels=64, height=7, width=7)
student.proposal_generator.anchor_generator.sizes = [[8], [16], [32], [64], [128]]
student.proposal_generator.batch_size_per_image = 128
student.proposal_generator.pre_nms_topk = (600, 300)
student.proposal_generator.post_nms_topk = (200, 100)
student.roi_heads.num_classes = 5
student.roi_heads.batch_size_per_image = 128
student.roi_heads.box_head.fc_dims = [256, 256]
student.roi_heads.box_predictor.input_shape = ShapeSpec(channels=256)
student.roi_heads.box_predictor.test_topk_per_image = 50
for key in ("mask_in_features", "mask_pooler", "mask_head"):
    del student.roi_heads[key]

dataloader = get_config("common/data/coco.py").dataloader
# detectron2's loaders, with class indices checked at load time and image errors naming the file
NUM_CLASSES = "${model.student.roi_heads.num_classes}"
dataloader.train.dataset = L(get_checked_dataset_dicts)(
    names="detkd_shapes_train", num_classes=NUM_CLASSES
)
dataloader.train.mapper._target_ = FileNamingDatasetMapper
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(96,), max_size=128, sample_style="choice"),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.mapper.use_instance_mask = False
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 1
dataloader.test.dataset = L(get_checked_dataset_dicts)(
    names="detkd_shapes_val", num_classes=NUM_CLASSES, filter_empty=False
)
dataloader.test.mapper._target_ = FileNamingDatasetMapper
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=96, max_size=128)]
dataloader.test.num_workers = 1
dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}", tasks=("bbox",))

optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.02

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01], milestones=[450, 550], num_updates=600
    ),
    warmup_length=50 / 600,
    warmup_factor=0.001,
)

train = get_config("common/train.py").train
train.max_iter = 600
train.device = "cpu"
train.init_checkpoint = ""
train.eval_period = 0
train.checkpointer.period = 100000

# the demo teacher (configs/demo/teacher.yaml next to the yaml configs, wherever this runs from),
# loaded from where `make demo` trains it
teacher = L(teacher_from_config)(
    config_file=os.path.join(os.path.dirname(__file__), "../demo/teacher.yaml"),
    weights="output/demo/teacher/model_final.pth",
)
