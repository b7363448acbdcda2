"""Stock equivalence: with every method off, DistillRCNN trains exactly as stock GeneralizedRCNN.

DistillRCNN does not call ``GeneralizedRCNN.forward``: it normalises and pads the images itself
(``_student_images``), runs the backbone through ``heads.run_backbone`` and re-does
``RPN.forward`` in ``heads.run_rpn`` to keep the tensors the distillers read. A detectron2 upgrade
that changes ``RPN.forward`` or ``GeneralizedRCNN.forward`` must not make our path drift silently,
so a stock GeneralizedRCNN built from ``student_config(cfg)``, holding the same weights (strict
load), fed the same batch under the same RNG seed (RPN anchor sampling and ROI proposal sampling
draw from torch's RNG), must give bit-identical losses, parameter gradients and BatchNorm running
statistics. The same holds for the student path alone with ``MODEL.DISTILL.STUDENT_INPUT_SCALE``,
against a stock model fed the downscaled ImageList and GT boxes.

Tolerance: none, ``torch.equal`` throughout. Both sides run the same ops in the same order on the
same tensors; the loss dicts are summed in sorted key order on both sides (the gradient of a sum
is 1 for every term, so the order affects no gradient, only the total).
"""

import pytest
import torch
from conftest import make_cfg
from detectron2.modeling import GeneralizedRCNN, build_model
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import EventStorage
from torch.nn import functional as F

from detkd.engine.export import student_config
from detkd.modeling import DistillRCNN

DETECTOR_LOSSES = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
SEED = 1234  # re-seeded right before each forward: both sides must draw the same samples


def build_pair(cfg):
    """DistillRCNN of ``cfg`` and stock GeneralizedRCNN of ``student_config(cfg)``, same weights."""
    ours = build_model(cfg)
    assert type(ours) is DistillRCNN
    assert ours.teacher is None and len(ours.distillers) == 0, "a method is on"
    stock = build_model(student_config(cfg))
    assert type(stock) is GeneralizedRCNN
    stock.load_state_dict(ours.student.state_dict(), strict=True)
    return ours.train(), stock.train()


def training_step(model, batched_inputs):
    """One seeded forward + backward; returns the loss dict."""
    torch.manual_seed(SEED)
    with EventStorage():
        losses = model(batched_inputs)
    sum(losses[k] for k in sorted(losses)).backward()
    return losses


def assert_same_step(ours_losses, stock_losses, student, stock):
    """Same losses, same gradient for every parameter, same state (BN running stats) after."""
    assert set(ours_losses) == set(stock_losses) == DETECTOR_LOSSES
    for k in sorted(DETECTOR_LOSSES):
        a, b = ours_losses[k], stock_losses[k]
        assert torch.isfinite(a) and a > 0, f"{k} = {a}: the comparison would be vacuous"
        assert torch.equal(a, b), f"{k}: DistillRCNN {a.item()!r} vs stock {b.item()!r}"

    ours_params, stock_params = dict(student.named_parameters()), dict(stock.named_parameters())
    assert ours_params.keys() == stock_params.keys()
    # every parameter of this detector takes part in the loss (FREEZE_AT 0): all have a gradient
    no_grad = [n for n, p in ours_params.items() if p.grad is None]
    assert no_grad == [], f"DistillRCNN left these parameters without gradient: {no_grad}"
    no_grad = [n for n, p in stock_params.items() if p.grad is None]
    assert no_grad == [], f"stock left these parameters without gradient: {no_grad}"
    differ = {
        n: (p.grad - stock_params[n].grad).abs().max().item()
        for n, p in ours_params.items()
        if not torch.equal(p.grad, stock_params[n].grad)
    }
    assert not differ, f"{len(differ)} parameter gradients differ (max abs difference): {differ}"
    assert sum(int(p.grad.count_nonzero()) for p in ours_params.values()) > 0

    ours_state, stock_state = student.state_dict(), stock.state_dict()
    differ = [k for k, v in ours_state.items() if not torch.equal(v, stock_state[k])]
    assert not differ, f"state after the step differs (BatchNorm running stats?): {differ}"


# several GT boxes in two images of unequal size (so padding matters), one with odd sides (so the
# downscaled sizes round: 37.5 and 41.5 give 38 and 42 under half-up and half-to-even alike)
SIZES = [(64, 96), (75, 83)]
BOXES = [
    [[8.0, 6.0, 40.0, 30.0], [50.0, 20.0, 90.0, 60.0], [12.5, 33.0, 31.5, 58.0]],
    [
        [4.0, 10.0, 36.0, 44.0],
        [40.0, 30.0, 80.0, 72.0],
        [20.0, 50.0, 60.0, 70.0],
        [60.0, 4.0, 78.0, 22.0],
    ],
]
CLASSES = [[0, 3, 1], [2, 4, 0, 1]]


def hand_made_inputs():
    """DatasetMapper-like dicts: uint8 CHW images, each GT box drawn as a bright rectangle."""
    g = torch.Generator().manual_seed(7)
    out = []
    for (h, w), boxes, classes in zip(SIZES, BOXES, CLASSES):
        image = torch.randint(0, 96, (3, h, w), generator=g, dtype=torch.uint8)
        for x0, y0, x1, y1 in boxes:
            image[:, int(y0) : int(y1), int(x0) : int(x1)] = 200
        instances = Instances((h, w))
        instances.gt_boxes = Boxes(torch.tensor(boxes))
        instances.gt_classes = torch.tensor(classes)
        out.append({"image": image, "height": h, "width": w, "instances": instances})
    return out


@pytest.mark.parametrize("backbone", ["build_resnet_fpn_backbone", "build_resnet_pafpn_backbone"])
def test_no_method_step_equals_stock_generalized_rcnn(backbone):
    cfg = make_cfg("configs/demo/student.yaml", "MODEL.BACKBONE.NAME", backbone)
    ours, stock = build_pair(cfg)
    data = hand_made_inputs()
    ours_losses = training_step(ours, data)
    stock_losses = training_step(stock, data)
    assert_same_step(ours_losses, stock_losses, ours.student, stock)


def downscaled_image_list(stock, batched_inputs, scale):
    """What the student must see at ``scale``, restated here (not calling DistillRCNN) so that a
    change to ``_student_images`` is caught: normalise, pad to the backbone's divisibility / scale
    (so the downscaled tensor is itself divisible by the backbone's), bilinear antialiased resize
    of the padded tensor, image sizes scaled and rounded."""
    images = [(x["image"] - stock.pixel_mean) / stock.pixel_std for x in batched_inputs]
    divisibility = int(stock.backbone.size_divisibility / scale)
    padded = ImageList.from_tensors(
        images, divisibility, padding_constraints=stock.backbone.padding_constraints
    )
    h, w = padded.tensor.shape[-2:]
    tensor = F.interpolate(
        padded.tensor,
        size=(round(h * scale), round(w * scale)),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    sizes = [(round(ih * scale), round(iw * scale)) for ih, iw in padded.image_sizes]
    return ImageList(tensor, sizes)


def test_low_resolution_student_step_equals_stock_on_the_downscaled_batch():
    scale = 0.5
    cfg = make_cfg("configs/demo/lowres_student.yaml")
    assert cfg.MODEL.DISTILL.STUDENT_INPUT_SCALE == scale
    ours, stock = build_pair(cfg)
    data = hand_made_inputs()
    expected = downscaled_image_list(stock, data, scale)
    assert expected.tensor.shape[-2:] == (64, 64) and expected.image_sizes == [(32, 48), (38, 42)]
    # The stock side cannot get this tensor through its own preprocess_image: that zero-pads after
    # normalising, whereas the student's input is the *padded* tensor resized, and the
    # antialiased kernel at scale 1/2 spans 4 input pixels (weights 1/8, 3/8, 3/8, 1/8), so the
    # first padding row/column past an even-sized image holds 1/8 of the image's last one (checked
    # below). Nor can un-normalised pixels round-trip bit-exactly. So the stock forward runs
    # unchanged except that preprocess_image returns this ImageList, and its GT boxes are scaled by
    # 0.5 (exact in floating point) with the downscaled image sizes.
    assert expected.tensor[0, :, 32, :48].abs().sum() > 0, "padding row 32 of image 0 is zero"
    stock.preprocess_image = lambda batched_inputs: expected
    stock_data = []
    for x, size in zip(data, expected.image_sizes):
        instances = Instances(size)
        instances.gt_boxes = Boxes(x["instances"].gt_boxes.tensor * scale)
        instances.gt_classes = x["instances"].gt_classes
        stock_data.append({"image": x["image"], "instances": instances})  # image: unread

    seen = {}
    hook = ours.student.backbone.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
    ours_losses = training_step(ours, data)
    hook.remove()
    assert torch.equal(seen["x"], expected.tensor), "DistillRCNN's student input is not the spec's"
    stock_losses = training_step(stock, stock_data)
    assert_same_step(ours_losses, stock_losses, ours.student, stock)
