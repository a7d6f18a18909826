"""Seed 002's mmcls Python configs: read without mmcv, mapped to onebit flags, errors by key."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from onebit.cli import main as onebit_main
from onebit.train.config import resolve
from onebit.models.mmcls_config import load_mmcls_config, read_config
from onebit.train.optim import set_lr

ONEBIT = [sys.executable, "-m", "onebit"]

DATASET = '''
dataset_type = 'ImageNet'
img_norm_cfg = dict(
    mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', size=224),
    dict(type='RandomFlip', flip_prob=0.5, direction='horizontal'),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='ImageToTensor', keys=['img']),
    dict(type='Collect', keys=['img', 'gt_label'])
]
data = dict(
    samples_per_gpu=128,
    workers_per_gpu=4,
    train=dict(type=dataset_type, data_prefix='data/imagenet/train', pipeline=train_pipeline),
    val=dict(type=dataset_type, data_prefix='data/imagenet/val', ann_file='data/imagenet/meta/val.txt',
             pipeline=train_pipeline))
evaluation = dict(interval=1, metric='accuracy')
'''
SCHEDULE = '''
optimizer = dict(
    type='SGD', lr=0.4, momentum=0.9, weight_decay=0.0001, nesterov=True)
optimizer_config = dict(grad_clip=None)
lr_config = dict(
    policy='step',
    warmup='linear',
    warmup_iters=2500,
    warmup_ratio=0.25,
    step=[30, 60, 90])
runner = dict(type='EpochBasedRunner', max_epochs=100)
'''
RUNTIME = '''
checkpoint_config = dict(interval=1)
log_config = dict(interval=100, hooks=[dict(type='TextLoggerHook')])
dist_params = dict(backend='nccl')
log_level = 'INFO'
load_from = None
resume_from = None
workflow = [('train', 1)]
'''
IRNET_R18 = '''_base_ = [
    '../../_base_/datasets/imagenet_bs128.py',
    '../../_base_/schedules/imagenet_bs1024.py', '../../_base_/default_runtime.py'
]

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ResArch',
        arch='IRNet-18',
        num_stages=4,
        out_indices=(3, ),
        stem_act='hardtanh',
        style='pytorch'),
    neck=dict(type='GlobalAveragePoolingBN', in_channels=512),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5),
    ))
custom_imports = dict(imports=['mmcls.core.utils.ede'], allow_failed_imports=False)
custom_hooks = [
    dict(type='EDEHook', total_epoch=100)
]
work_dir = 'work_dirs/baseline/irnet_r18'
find_unused_parameters=True
seed = 166
'''
REACTNET_A_STEP2 = '''_base_ = ['../../_base_/datasets/imagenet_bs128.py', '../../_base_/default_runtime.py']
model = dict(
    type='DistillingImageClassifier',
    backbone=dict(type='MobileArch', arch='ReActNet-A', binary_type=(True, True), style='pytorch'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=1000, in_channels=1024,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, 5),),
    distill=dict(
        teacher_cfg='configs/_base_/models/resnet34.py',
        teacher_ckpt='work_dirs/resnet34_batch256_imagenet_20200708-32ffb4f7.pth',
        loss_weight=1.,
        only_kdloss=True))
optimizer = dict(type='Adam', lr=1e-3, weight_decay=0., paramwise_cfg=dict(norm_decay_mult=0))
optimizer_config = dict(grad_clip=None)
lr_config = dict(policy='poly', min_lr=0, by_epoch=False)
runner = dict(type='EpochBasedRunner', max_epochs=256)
load_from = 'work_dirs/reactnet_a_step1/epoch_256.pth'
seed = 166
'''


@pytest.fixture()
def configs(tmp_path) -> Path:
    """The seed's folder layout: configs/_base_/{datasets,schedules}, configs/baseline/<method>/."""
    root = tmp_path / "configs"
    for name, text in {"_base_/datasets/imagenet_bs128.py": DATASET, "_base_/schedules/imagenet_bs1024.py": SCHEDULE,
                       "_base_/default_runtime.py": RUNTIME, "baseline/irnet/irnet_r18.py": IRNET_R18,
                       "baseline/reactnet/reactnet_a_step2.py": REACTNET_A_STEP2}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_irnet_r18_maps_to_onebit_flags(configs):
    flags = load_mmcls_config(configs / "baseline/irnet/irnet_r18.py")
    assert flags == {
        "dataset": "imagenet", "model": "irnet_r18", "a32": False, "w32": False,
        "model_kwargs": {"downsample": "conv", "stem_act": "hardtanh", "head_bn": True},
        "optimizer": "sgd", "lr": 0.4, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4,
        "weight_decay_scope": "all", "lr_type": "step", "lr_decay_step": [30, 60, 90], "lr_gamma": 0.1,
        "lr_per_iter": False, "warmup_iters": 2500, "warmup_ratio": 0.25, "epochs": 100,
        "batch_size": 1024, "workers": 4, "seed": 166,
    }


def test_reader_merges_bases_and_unpacks(configs):
    cfg = read_config(configs / "baseline/irnet/irnet_r18.py")
    assert cfg["data"]["train"]["pipeline"][3] == {"type": "Normalize", "mean": [123.675, 116.28, 103.53],
                                                   "std": [58.395, 57.12, 57.375], "to_rgb": True}
    assert cfg["model"]["backbone"]["out_indices"] == (3,) and cfg["workflow"] == [("train", 1)]
    child = configs / "baseline/irnet/child.py"
    child.write_text("_base_ = './irnet_r18.py'\noptimizer = dict(lr=0.1 * 2, nesterov=False)\n"
                     "runner = dict(_delete_=True, type='EpochBasedRunner', max_epochs=-(-3))\n")
    cfg = read_config(child)
    assert cfg["optimizer"] == {"type": "SGD", "lr": 0.2, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False}
    assert cfg["runner"] == {"type": "EpochBasedRunner", "max_epochs": 3}


def test_command_line_overrides_a_py_config(configs):
    config = resolve(["--config", str(configs / "baseline/reactnet/reactnet_a_step2.py"),
                      "--dataset", "cifar10", "--epochs", "1", "--stage1", "step1.pth"])
    assert (config["model"], config["dataset"], config["epochs"], config["stage1"]) == (
        "reactnet_a", "cifar10", 1, "step1.pth")
    assert (config["teacher"], config["distill"], config["optimizer"], config["lr_type"], config["lr_per_iter"]) == (
        "torchvision:resnet34", "distributional", "adam", "linear", True)
    assert config["weight_decay_scope"] == "no_bn" and config["batch_size"] == 1024


def test_mmcls_schedules_follow_mmcv_formulas():
    import torch

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    warm = dict(lr=0.4, epochs=100, lr_type="step", lr_decay_step=[30, 60, 90], warm_up=False,
                warmup_iters=2500, warmup_ratio=0.25)
    # mmcv: lr * (1 - (1 - i / N) (1 - ratio)) for global iteration i < N
    for epoch, step, steps in ((0, 0, 1000), (1, 500, 1000), (2, 499, 1000), (2, 500, 1000), (30, 0, 1000)):
        i = epoch * steps + step
        expected = 0.4 * 0.1 ** (epoch >= 30) * (1 - (1 - i / 2500) * 0.75 if i < 2500 else 1.0)
        assert math.isclose(set_lr(opt, epoch, warm, step, steps), expected, rel_tol=1e-12)
    poly = dict(lr=1e-3, epochs=256, lr_type="linear", warm_up=False, lr_decay_step=None, lr_per_iter=True)
    # poly with power 1 and min_lr 0, by iteration: lr (1 - iter / max_iters)
    assert math.isclose(set_lr(opt, 10, poly, 250, 1000), 1e-3 * (1 - 10250 / 256000), rel_tol=1e-12)


@pytest.mark.parametrize("edit,message", [
    (("arch='IRNet-18'", "arch='IRNet-19'"), "model.backbone ResArch arch 'IRNet-19' has no onebit model"),
    (("seed = 166", "seed = 166\nfp16 = dict(loss_scale=512.)"), "fp16 = {'loss_scale': 512.0}: onebit has no such"),
    (("style='pytorch'", "style='caffe'"), "model.backbone.style = 'caffe': onebit implements 'pytorch'"),
    (("stem_act='hardtanh',", "stem_act='hardtanh', zero_init_residual=True,"),
     "model.backbone.zero_init_residual = True: onebit has no such setting"),
    (("seed = 166", "import os\nseed = 166"), "irnet_r18.py:29: unsupported statement Import"),
    (("seed = 166", "seed = int('166')"), "irnet_r18.py:29: unsupported expression"),
    (("total_epoch=100", "total_epoch=90"), "EDEHook total_epoch = 90 differs from runner.max_epochs 100"),
])
def test_bad_configs_are_one_line_errors(configs, edit, message, capsys):
    path = configs / "baseline/irnet/irnet_r18.py"
    path.write_text(IRNET_R18.replace(*edit))
    assert onebit_main(["summary", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_summary_of_a_py_config_has_the_published_counts(configs):
    """ReActNet-A at 224x224: 4.82e9 BOPs, 0.12e8 FLOPs, 0.87e8 OPs (Liu et al. 2020)."""
    result = subprocess.run(ONEBIT + ["summary", "--config", str(configs / "baseline/reactnet/reactnet_a_step2.py"),
                                      "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    totals = json.loads(result.stdout)["totals"]
    assert round(totals["bops"] / 1e9, 2) == 4.82 and round(totals["flops"] / 1e7, 1) == 1.2
    assert round(totals["ops"] / 1e8, 2) == 0.87 and round(totals["params"] / 1e6, 1) == 29.3
