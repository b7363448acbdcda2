"""PAFPN: detectron2's FPN followed by a bottom-up path-aggregation path (Liu et al. 2018), so
that MSSD (Jia et al. 2024) can let each top-down FPN map teach the deeper bottom-up output of
the same scale.

Outputs ``p2``..``p6`` are the bottom-up path's (what the stock RPN and ROI heads consume);
``fpn_p2``..``fpn_p6`` are the top-down FPN maps they are distilled from:

    N_2 = P_2,   N_{l+1} = conv3x3(P_{l+1} + conv3x3_stride2(N_l)),   N_6 = maxpool(N_5)
"""

import fvcore.nn.weight_init as weight_init
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, build_resnet_fpn_backbone
from torch import nn

__all__ = ["PAFPN", "build_resnet_pafpn_backbone"]


class PAFPN(Backbone):
    def __init__(self, fpn: FPN, norm: str = ""):
        super().__init__()
        self.fpn = fpn
        shapes = fpn.output_shape()
        # the path runs over the FPN levels built from bottom-up features, not the top block's
        n_main = len(fpn.in_features)
        self.path_features = list(fpn._out_features[:n_main])
        self.extra_features = list(fpn._out_features[n_main:])
        channels = shapes[self.path_features[0]].channels
        use_bias = norm == ""
        self.down_convs = nn.ModuleList()
        self.path_convs = nn.ModuleList()
        for _ in self.path_features[1:]:
            down = Conv2d(
                channels,
                channels,
                3,
                stride=2,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, channels),
            )
            out = Conv2d(
                channels, channels, 3, padding=1, bias=use_bias, norm=get_norm(norm, channels)
            )
            weight_init.c2_xavier_fill(down)
            weight_init.c2_xavier_fill(out)
            self.down_convs.append(down)
            self.path_convs.append(out)
        self._shapes = {}
        for f in fpn._out_features:
            self._shapes[f] = shapes[f]
            self._shapes[f"fpn_{f}"] = shapes[f]

    @property
    def bottom_up(self):
        return self.fpn.bottom_up

    @property
    def size_divisibility(self):
        return self.fpn.size_divisibility

    @property
    def padding_constraints(self):
        return self.fpn.padding_constraints

    def forward(self, x):
        top_down = self.fpn(x)
        outputs = {self.path_features[0]: top_down[self.path_features[0]]}
        prev = outputs[self.path_features[0]]
        for name, down, conv in zip(self.path_features[1:], self.down_convs, self.path_convs):
            prev = conv(top_down[name] + down(prev))
            outputs[name] = prev
        for name in self.extra_features:  # e.g. p6 of LastLevelMaxPool, recomputed on the path
            prev = F.max_pool2d(prev, kernel_size=1, stride=2)
            outputs[name] = prev
        outputs.update({f"fpn_{k}": v for k, v in top_down.items()})
        return outputs

    def output_shape(self):
        return dict(self._shapes)


@BACKBONE_REGISTRY.register()
def build_resnet_pafpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet + FPN (``MODEL.FPN.*``) + a bottom-up path (``MODEL.PAFPN.NORM``)."""
    return PAFPN(build_resnet_fpn_backbone(cfg, input_shape), norm=cfg.MODEL.PAFPN.NORM)
