"""Build, load, verify and freeze the teacher.

A teacher is a complete detectron2 model (any meta-architecture whose pieces detkd reads:
``backbone``, ``proposal_generator``, ``roi_heads``), described by its own yaml or LazyConfig
``.py`` and loaded from its own checkpoint. Loading is strict: a missing file, any teacher
parameter or buffer left un-loaded, or a shape mismatch is an error that names the keys. A
randomly initialised teacher is never used silently.
"""

import logging
import os
from typing import List, Optional, Sequence

import torch
from torch import nn

from ..checkpoint import Checkpointer
from ..config import add_detkd_config, resolve_path

__all__ = [
    "TeacherWeightsError",
    "build_teacher",
    "load_teacher_weights",
    "freeze",
    "teacher_from_config",
    "teacher_of",
]

logger = logging.getLogger(__name__)


class TeacherWeightsError(RuntimeError):
    """The teacher's checkpoint is missing or does not fit the teacher's architecture."""


def _short_list(items: Sequence, limit: int = 12) -> str:
    items = list(items)
    text = ", ".join(str(x) for x in items[:limit])
    return text + (f", ... ({len(items)} in all)" if len(items) > limit else "")


class _StrictCheckpointer(Checkpointer):
    """Checkpointer that raises, naming the keys, unless every teacher tensor loads and every
    checkpoint tensor is used (keys under ``ignored_prefixes`` may be left unused)."""

    def __init__(self, model, ignored_prefixes: Sequence[str] = (), **kwargs):
        super().__init__(model, **kwargs)
        self.ignored_prefixes = tuple(ignored_prefixes)

    def _check_loaded(self, incompatible):
        problems = []
        if incompatible.missing_keys:
            problems.append(
                f"{len(incompatible.missing_keys)} teacher keys not in the checkpoint: "
                + _short_list(incompatible.missing_keys)
            )
        if incompatible.incorrect_shapes:
            problems.append(
                "shape mismatches (key: checkpoint vs teacher): "
                + _short_list(
                    f"{k}: {tuple(a)} vs {tuple(b)}" for k, a, b in incompatible.incorrect_shapes
                )
            )
        unused = [
            k for k in incompatible.unexpected_keys if not k.startswith(self.ignored_prefixes)
        ]
        if unused:
            problems.append(
                f"{len(unused)} checkpoint keys the teacher does not use: {_short_list(unused)} "
                "(list prefixes that may be left unused in "
                "MODEL.DISTILL.TEACHER.IGNORED_KEY_PREFIXES)"
            )
        if problems:
            raise TeacherWeightsError(
                f"The teacher checkpoint {self._path} does not fit the teacher config "
                "(is it for another architecture or class count?): " + "; ".join(problems)
            )
        ignored = len(incompatible.unexpected_keys) - len(unused)
        if ignored:
            logger.info(
                "Teacher checkpoint: %d keys under %s left unused, as configured",
                ignored,
                list(self.ignored_prefixes),
            )
        super()._check_loaded(incompatible)


def load_teacher_weights(
    teacher: nn.Module,
    weights: str,
    ignored_prefixes: Sequence[str] = (),
    allow_unsafe_pickle: bool = False,
) -> None:
    """Load ``weights`` into ``teacher``; raise :class:`TeacherWeightsError` unless every key fits.

    ``weights`` may be a plain detector checkpoint, a ``DistillRCNN`` checkpoint (its student is
    taken) or an exported student; it is read safely (see :mod:`detkd.checkpoint`).
    """
    if not weights:
        raise TeacherWeightsError(
            "MODEL.DISTILL.TEACHER.WEIGHTS is empty: a teacher needs trained weights "
            "(a random teacher would silently teach noise)"
        )
    local = weights.split("?")[0]
    if "://" not in local and not os.path.isfile(local):
        raise TeacherWeightsError(
            f"Teacher weights file not found: {weights} (relative paths are looked up "
            "from the working directory and from the config file that names them)"
        )
    _StrictCheckpointer(teacher, ignored_prefixes, allow_unsafe_pickle=allow_unsafe_pickle).load(
        weights
    )
    logger.info("Loaded teacher weights from %s", weights)


def freeze(module: nn.Module) -> nn.Module:
    """No gradients and eval mode (BatchNorm statistics never update)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def _build_from_yaml(config_file: str, opts: Sequence[str], device):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = add_detkd_config(get_cfg())
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if device is not None:
        cfg.MODEL.DEVICE = str(device)
    if cfg.MODEL.META_ARCHITECTURE == "DistillRCNN":
        raise ValueError(
            f"Teacher config {config_file} uses META_ARCHITECTURE DistillRCNN; a teacher must be a "
            "plain detector (e.g. GeneralizedRCNN)"
        )
    return build_model(cfg)


def _build_from_lazy(config_file: str, opts: Sequence[str]):
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(config_file)
    cfg = LazyConfig.apply_overrides(cfg, list(opts))
    return instantiate(cfg.model)


def build_teacher(
    model: nn.Module,
    weights: str,
    ignored_key_prefixes: Sequence[str] = (),
    allow_unsafe_pickle: bool = False,
) -> nn.Module:
    """Load ``weights`` into an already-built teacher ``model`` (strictly) and freeze it.

    Usable from LazyConfig:
    ``teacher=L(build_teacher)(model=L(GeneralizedRCNN)(...), weights=...)``.
    """
    load_teacher_weights(model, weights, ignored_key_prefixes, allow_unsafe_pickle)
    return freeze(model)


def teacher_from_config(
    config_file: str,
    weights: str,
    opts: Optional[List[str]] = None,
    device="cpu",
    ignored_key_prefixes: Sequence[str] = (),
    allow_unsafe_pickle: bool = False,
) -> nn.Module:
    """Build the teacher from a yaml or LazyConfig ``.py``, load its weights strictly and freeze it.

    ``config_file`` may also name a config of detectron2's model zoo
    (``model_zoo://COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml``). ``device`` overrides the teacher
    config's own (DistillRCNN moves it with the student anyway).
    """
    config_file = resolve_path(config_file)
    if not os.path.isfile(config_file):
        raise FileNotFoundError(
            f"Teacher config not found: MODEL.DISTILL.TEACHER.CONFIG_FILE={config_file!r} "
            "(relative paths are looked up from the working directory and from the config file "
            "that names them)"
        )
    opts = list(opts or [])
    if config_file.endswith(".py"):
        model = _build_from_lazy(config_file, opts)
    else:
        model = _build_from_yaml(config_file, opts, device)
    if device is not None:
        model.to(torch.device(device))
    return build_teacher(model, resolve_path(weights), ignored_key_prefixes, allow_unsafe_pickle)


def teacher_of(cfg) -> nn.Module:
    """The teacher a distillation config names (``MODEL.DISTILL.TEACHER``), built, loaded and
    frozen on ``MODEL.DEVICE``: what ``train_net.py --eval-teacher`` and ``detkd survey
    --eval-teacher`` evaluate."""
    d = cfg.MODEL.DISTILL.TEACHER
    if not d.CONFIG_FILE:
        raise ValueError("evaluating the teacher needs MODEL.DISTILL.TEACHER.CONFIG_FILE")
    return teacher_from_config(
        d.CONFIG_FILE,
        d.WEIGHTS,
        d.OPTS,
        device=cfg.MODEL.DEVICE,
        ignored_key_prefixes=d.IGNORED_KEY_PREFIXES,
        allow_unsafe_pickle=cfg.MODEL.DISTILL.ALLOW_UNSAFE_PICKLE,
    )
