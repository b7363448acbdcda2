"""Export the student alone, loadable by stock detectron2.

    python -m detkd.engine.export --config-file CONFIG --output DIR \\
        MODEL.WEIGHTS ckpt.pth [KEY VALUE ...]

writes ``DIR/model_student.pth`` (the student's state dict, no teacher, no adaptation/align
layers) and ``DIR/config_student.yaml`` (the config without detkd's keys), so that
``build_model(cfg)`` + ``DetectionCheckpointer(model).load("model_student.pth")`` load it with no
missing or unexpected keys. A student with the PAFPN backbone needs ``import detkd`` to build.
The teacher is neither built nor read. ``MODEL.WEIGHTS`` is required and must load into the
student (see :mod:`detkd.checkpoint`): exporting a randomly initialised student is refused.
"""

import argparse
import os

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode

from ..checkpoint import Checkpointer
from ..config import load_config, student_only_config

__all__ = ["student_config", "export_student", "main"]


def student_config(cfg: CfgNode) -> CfgNode:
    """The student's config for stock detectron2: META_ARCHITECTURE of the student, no detkd
    keys."""
    out = cfg.clone()
    out.defrost()
    out.MODEL.META_ARCHITECTURE = cfg.MODEL.DISTILL.STUDENT_META_ARCHITECTURE
    del out.MODEL["DISTILL"]
    del out.SOLVER["GLOBAL_GRAD_CLIP_NORM"]
    del out.SOLVER.AMP["PRECISION"]
    if "pafpn" not in cfg.MODEL.BACKBONE.NAME:
        del out.MODEL["PAFPN"]
    out.MODEL.WEIGHTS = ""
    scale = cfg.MODEL.DISTILL.STUDENT_INPUT_SCALE
    if scale != 1.0:
        # the student saw images scaled by STUDENT_INPUT_SCALE; stock detectron2 resizes them to
        # that size itself (its own resize of the image, not of the padded batch: close, not
        # bit-equal to DistillRCNN's predictions)
        inp = out.INPUT
        inp.MIN_SIZE_TEST = int(round(cfg.INPUT.MIN_SIZE_TEST * scale))
        inp.MAX_SIZE_TEST = int(round(cfg.INPUT.MAX_SIZE_TEST * scale))
        inp.MIN_SIZE_TRAIN = tuple(int(round(x * scale)) for x in cfg.INPUT.MIN_SIZE_TRAIN)
        inp.MAX_SIZE_TRAIN = int(round(cfg.INPUT.MAX_SIZE_TRAIN * scale))
    return out


def export_student(model, cfg: CfgNode, output_dir: str) -> str:
    """Write the student's weights and config; returns the checkpoint path."""
    os.makedirs(output_dir, exist_ok=True)
    student = model.student if hasattr(model, "student") else model
    DetectionCheckpointer(student, save_dir=output_dir).save("model_student")
    with open(os.path.join(output_dir, "config_student.yaml"), "w") as f:
        f.write(student_config(cfg).dump())
    return os.path.join(output_dir, "model_student.pth")


def main(argv=None):
    from detectron2.modeling import build_model

    parser = argparse.ArgumentParser(
        description="Export a DistillRCNN's student for stock detectron2"
    )
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args(argv)
    cfg = student_only_config(load_config(args.config_file, args.opts))
    if not cfg.MODEL.WEIGHTS:
        raise ValueError(
            "export needs MODEL.WEIGHTS (the trained checkpoint): without it the exported "
            "student would be randomly initialised"
        )
    model = build_model(cfg)
    Checkpointer(model, allow_unsafe_pickle=cfg.MODEL.DISTILL.ALLOW_UNSAFE_PICKLE).load(
        cfg.MODEL.WEIGHTS
    )
    path = export_student(model, cfg, args.output)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
