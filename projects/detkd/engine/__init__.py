"""Training, evaluation and export."""

from .clipping import add_global_norm_clipping
from .export import export_student, student_config
from .output_lock import OutputDirLocked, hold_output_dir
from .teacher_check import TeacherSanityCheck
from .trainer import DistillTrainer, build_evaluator
