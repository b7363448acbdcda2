"""detkd's losses: one loss per file, each with its formula and paper section."""

from .bounded_regression import bounded_regression_loss
from .cross_head import cross_head_box_l1, cross_head_kl
from .cwd import channel_wise_divergence
from .fgd import FGDLoss, GcBlock, channel_attention, spatial_attention
from .hint import HintLoss
from .masks import fgd_masks, gaussian_target_mask
from .mgd import MGDGenerator, mgd_loss, random_position_mask
from .mssd import MSSDLoss
from .pkd import batch_channel_moments, channel_standardize, pkd_loss
from .soft_ce import binary_logits_to_two_class, class_weights, weighted_soft_cross_entropy
