"""Chen et al. 2017 losses against values computed by hand on tiny tensors."""

import math

import pytest
import torch

from detkd.losses import (
    HintLoss,
    binary_logits_to_two_class,
    bounded_regression_loss,
    class_weights,
)
from detkd.losses import weighted_soft_cross_entropy as soft_ce


def test_soft_ce_hand_value_with_background_weight():
    # one row, 3 classes (2 objects + background last), T = 1
    s = torch.tensor([[0.0, math.log(2.0), 0.0]])  # P_s = [1/4, 1/2, 1/4]
    t = torch.tensor([[0.0, 0.0, math.log(2.0)]])  # P_t = [1/4, 1/4, 1/2]
    w = class_weights(3, 2, 1.5)
    assert w.tolist() == [1.0, 1.0, 1.5]
    expected = -(0.25 * math.log(0.25) + 0.25 * math.log(0.5) + 1.5 * 0.5 * math.log(0.25))
    assert soft_ce(s, t, w).item() == pytest.approx(expected, rel=1e-6)
    # plain weights: the background term loses its 1.5
    expected_plain = -(0.25 * math.log(0.25) + 0.25 * math.log(0.5) + 0.5 * math.log(0.25))
    assert soft_ce(s, t, torch.ones(3)).item() == pytest.approx(expected_plain, rel=1e-6)


def test_soft_ce_temperature_softens_both_sides():
    s = torch.tensor([[0.0, 2.0]])
    t = torch.tensor([[0.0, 4.0]])
    T = 2.0
    # softmax([0, 1]) and softmax([0, 2])
    ps1 = 1 / (1 + math.exp(-1.0))
    pt1 = 1 / (1 + math.exp(-2.0))
    expected = -((1 - pt1) * math.log(1 - ps1) + pt1 * math.log(ps1))
    assert soft_ce(s, t, torch.ones(2), temperature=T).item() == pytest.approx(expected, rel=1e-6)


def test_soft_ce_mean_over_rows_and_empty():
    s = torch.zeros(4, 2, requires_grad=True)
    t = torch.zeros(4, 2)
    assert soft_ce(s, t, torch.ones(2)).item() == pytest.approx(math.log(2.0), rel=1e-6)
    empty = soft_ce(torch.zeros(0, 2, requires_grad=True), torch.zeros(0, 2), torch.ones(2))
    assert empty.item() == 0.0 and empty.requires_grad


def test_soft_ce_gradient_goes_to_student_only():
    s = torch.randn(5, 3, requires_grad=True)
    t = torch.randn(5, 3, requires_grad=True)
    soft_ce(s, t, torch.ones(3)).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None
    # d/ds of -sum p_t log softmax(s) (mean over 5 rows) = (softmax(s) - p_t) / 5
    # when sum(w p_t) = 1
    expected = (torch.softmax(s, 1) - torch.softmax(t, 1)).detach() / 5
    assert torch.allclose(s.grad, expected, atol=1e-6)


def test_rpn_two_class_form_is_the_sigmoid():
    z = torch.tensor([-1.0, 0.0, 3.0])
    two = binary_logits_to_two_class(z)
    assert two.shape == (3, 2)
    assert torch.allclose(torch.softmax(two, -1)[:, 1], torch.sigmoid(z))
    # RPN background is index 0
    assert class_weights(2, 0, 1.5).tolist() == [1.5, 1.0]


def test_bounded_regression_switches_on_and_off():
    y = torch.zeros(3, 4)
    student = torch.tensor([[1.0, 0, 0, 0], [0.1, 0, 0, 0], [0.5, 0, 0, 0]], requires_grad=True)
    teacher = torch.tensor([[0.5, 0, 0, 0], [0.5, 0, 0, 0], [0.5, 0, 0, 0]])
    # errors: student 1, 0.01, 0.25 ; teacher 0.25 each.
    # row 0: 1 > 0.25 -> on; row 1: 0.01 < 0.25 -> off; row 2: 0.25 > 0.25 false -> off
    loss, active = bounded_regression_loss(student, teacher, y, margin=0.0)
    assert loss.item() == pytest.approx(1.0 / 3)
    assert active.item() == pytest.approx(1 / 3)
    # a margin of 0.3 switches row 1 (0.31 > 0.25) and row 2 (0.55 > 0.25) on
    loss, active = bounded_regression_loss(student, teacher, y, margin=0.3)
    assert loss.item() == pytest.approx((1.0 + 0.01 + 0.25) / 3)
    assert active.item() == pytest.approx(1.0)
    loss.backward()
    # d/ds of ||s - y||^2 / 3 = 2 (s - y) / 3
    assert torch.allclose(student.grad, 2 * student.detach() / 3)


def test_bounded_regression_uses_the_given_normalizer():
    s = torch.tensor([[1.0, 0, 0, 0], [0.0, 2.0, 0, 0]])
    loss, _ = bounded_regression_loss(s, torch.zeros(2, 4), torch.zeros(2, 4), normalizer=10)
    assert loss.item() == pytest.approx((1.0 + 4.0) / 10)  # summed, divided by all sampled rows


def test_bounded_regression_no_foreground_is_zero():
    s = torch.zeros(0, 4, requires_grad=True)
    loss, active = bounded_regression_loss(s, torch.zeros(0, 4), torch.zeros(0, 4))
    assert loss.item() == 0 and loss.requires_grad


def test_hint_loss_hand_value_and_gradients():
    hint = HintLoss(2, 3, kernel_size=1)
    with torch.no_grad():
        hint.adaptation.weight.zero_()
        hint.adaptation.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
    s = torch.randn(1, 2, 2, 2, requires_grad=True)
    t = torch.zeros(1, 3, 2, 2, requires_grad=True)
    loss = hint(s, t)
    # adapted = bias everywhere: mean of (1, 4, 9) over channels
    assert loss.item() == pytest.approx((1 + 4 + 9) / 3)
    loss.backward()
    assert hint.adaptation.bias.grad is not None and t.grad is None
    l1 = HintLoss(2, 3, kernel_size=3, norm="l1")
    assert l1.adaptation.kernel_size == (3, 3)
    with pytest.raises(ValueError, match="kernel"):
        HintLoss(2, 3, kernel_size=5)


def test_hint_loss_on_standardized_maps_by_hand():
    """``normalize``: both maps standardized per channel before the error. An adapted map that is
    constant per channel standardizes to 0, so the loss is the mean square of the standardized
    teacher: 1 on each varying channel, 0 on a constant one."""
    hint = HintLoss(2, 3, kernel_size=1, normalize=True)
    with torch.no_grad():
        hint.adaptation.weight.zero_()
        hint.adaptation.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
    t = torch.tensor([[0.0, 1.0, 2.0, 3.0], [5.0, 5.0, 5.0, 5.0], [-1.0, 1.0, -1.0, 1.0]])
    t = t.view(1, 3, 2, 2)
    s = torch.randn(1, 2, 2, 2)
    assert hint(s, t).item() == pytest.approx((4 + 0 + 4) / 12, rel=1e-5)
    # the scale of the teacher's maps leaves it unchanged; the raw loss grows with it
    assert hint(s, 1000 * t).item() == pytest.approx(hint(s, t).item(), rel=1e-5)
    raw = HintLoss(2, 3, kernel_size=1)
    raw.load_state_dict(hint.state_dict())
    assert raw(s, 1000 * t).item() > 100 * raw(s, t).item()
    # gradients reach the student and the adaptation layer through the standardization
    with torch.no_grad():
        hint.adaptation.weight.normal_()
    s = torch.randn(2, 2, 3, 3, requires_grad=True)
    t = torch.randn(2, 3, 3, 3, requires_grad=True)
    loss = hint(s, t)
    loss.backward()
    assert torch.isfinite(loss) and s.grad.abs().sum() > 0 and t.grad is None
    assert hint.adaptation.weight.grad.abs().sum() > 0
