import math

import pytest
import torch

import fcnseg
from fcnseg.config import TrainConfig
from fcnseg.engine import build_optimizer, build_scheduler, lr_factor, param_groups


def test_biases_get_twice_the_lr_and_no_decay_frozen_deconvs_left_out():
    model = fcnseg.build_model("fcn8s", backbone="resnet18", num_classes=3)
    cfg = TrainConfig(optimizer="sgd", lr=0.01, momentum=0.99, weight_decay=5e-4)
    opt = build_optimizer(model, cfg)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["weights"]["lr"] == pytest.approx(0.01)
    assert groups["weights"]["weight_decay"] == pytest.approx(5e-4)
    assert groups["biases"]["lr"] == pytest.approx(0.02)
    assert groups["biases"]["weight_decay"] == 0.0
    assert opt.defaults["momentum"] == 0.99
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert frozen, "the bilinear upsamplers should be frozen"
    assert not any(id(p) in in_opt for p in frozen)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(in_opt) == len(trainable)
    names = {
        n
        for n, p in model.named_parameters()
        if id(p) in {id(q) for q in groups["biases"]["params"]}
    }
    assert names and all(n.endswith("bias") for n in names)


def test_bias_decay_and_adamw():
    model = fcnseg.build_model("fcn32s", backbone="resnet18", num_classes=3)
    groups = param_groups(model, 1e-3, 0.1, bias_lr_mult=1.0, bias_decay=True)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.1]
    opt = build_optimizer(model, TrainConfig(optimizer="adamw", lr=1e-3))
    assert isinstance(opt, torch.optim.AdamW)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_cpu_optimisers_are_torchs_fused_ones_and_step_as_the_per_tensor_loop(name):
    torch.manual_seed(0)
    model = fcnseg.build_model("fcn32s", backbone="resnet18", num_classes=3)
    twin = fcnseg.build_model("fcn32s", backbone="resnet18", num_classes=3)
    twin.load_state_dict(model.state_dict())
    cfg = TrainConfig(optimizer=name, lr=1e-2, weight_decay=1e-2)
    opt = build_optimizer(model, cfg)
    assert all(g["fused"] for g in opt.param_groups)
    loop = build_optimizer(twin, cfg)
    for g in loop.param_groups:
        g["fused"], g["foreach"] = False, False  # torch's reference per-tensor update
    x = torch.randn(2, 3, 64, 64)
    for _ in range(3):
        for net, o in ((model, opt), (twin, loop)):
            o.zero_grad()
            net(x).square().mean().backward()
            o.step()
    # the same arithmetic in another order: float32 rounding of each parameter and update
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_schedule_values():
    assert lr_factor(0, "fixed", 100) == 1.0
    assert lr_factor(50, "poly", 100, power=0.9) == pytest.approx(0.5**0.9)
    assert lr_factor(100, "poly", 100) == 0.0
    assert lr_factor(50, "cosine", 100) == pytest.approx(0.5)
    assert lr_factor(25, "cosine", 100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    # linear warm-up over 10 steps, then the schedule over the 90 that follow
    assert lr_factor(0, "poly", 100, warmup_steps=10) == pytest.approx(1 / 11)
    assert lr_factor(9, "poly", 100, warmup_steps=10) == pytest.approx(10 / 11)
    assert lr_factor(10, "poly", 100, warmup_steps=10) == 1.0
    assert lr_factor(55, "poly", 100, warmup_steps=10) == pytest.approx(0.5**0.9)
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, "step", 10)


def test_a_time_budget_moves_the_schedule_when_it_runs_ahead_of_the_steps():
    # position = max(step fraction, time fraction): a slow machine ends decayed on time
    assert lr_factor(10, "poly", 100, time_fraction=0.5) == pytest.approx(0.5**0.9)
    assert lr_factor(50, "poly", 100, time_fraction=0.1) == pytest.approx(0.5**0.9)
    assert lr_factor(10, "poly", 100, time_fraction=1.3) == 0.0  # clipped at the end
    assert lr_factor(10, "cosine", 100, time_fraction=1.0) == pytest.approx(0.0)
    # inside the warm-up too: a run the clock stops during warm-up still ends at 0
    assert lr_factor(3, "poly", 100, warmup_steps=5, time_fraction=0.9) == pytest.approx(
        4 / 6 * 0.1**0.9
    )
    assert lr_factor(3, "poly", 100, warmup_steps=5, time_fraction=1.0) == 0.0
    assert lr_factor(3, "fixed", 100, time_fraction=0.9) == 1.0


def test_scheduler_steps_every_group_from_its_own_base_lr():
    model = fcnseg.build_model("fcn32s", backbone="resnet18", num_classes=3)
    cfg = TrainConfig(optimizer="sgd", lr=0.1, schedule="poly", warmup_steps=2)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=12)
    seen = []
    for _ in range(7):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx([0.1 / 3, 0.2 / 3])
    assert seen[2] == pytest.approx([0.1, 0.2])
    assert seen[6] == pytest.approx([0.1 * 0.6**0.9, 0.2 * 0.6**0.9])
    clock = {"f": 0.0}
    timed = build_scheduler(opt, cfg, total_steps=1000, time_fraction=lambda: clock["f"])
    clock["f"] = 0.75  # three quarters of the time budget gone after two steps
    opt.step()
    timed.step()
    opt.step()
    timed.step()
    opt.step()
    timed.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.25**0.9)
