"""Shards of a global batch: W processes, or one process taking the W shards in turns, compute the
same step; plain DDP computes it up to rounding; a failing process says why."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from onebit.train.distributed import TurnShards, ordered_sum

from helpers import ONE_THREAD_ENV

TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"


def torchrun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", *args],
                          capture_output=True, text=True, env=ONE_THREAD_ENV, timeout=300)


def failure(result: subprocess.CompletedProcess) -> str:
    """What the processes printed (first), then torchrun's summary (last)."""
    return f"exit code {result.returncode}\n{result.stderr[:4000]}\n...\n{result.stderr[-1500:]}"


def test_ordered_sum_is_a_left_fold():
    a, b, c = torch.tensor([1e8]), torch.tensor([1.0]), torch.tensor([-1e8])
    assert ordered_sum([a, b, c]).item() == 0.0  # float32: 1e8 + 1 rounds to 1e8
    assert ordered_sum([a, c, b]).item() == 1.0
    assert a.item() == 1e8  # the parts are left untouched


def test_turn_shards_sum_in_shard_order_and_each_shard_draws_alike():
    shards = TurnShards(3)
    torch.manual_seed(0)
    expected_draw, expected_next = torch.rand(2), torch.rand(2)
    torch.manual_seed(0)

    def fn(i):
        draw = torch.rand(2)  # every shard starts from the same generator state, as W processes seeded alike
        s = shards.sum(torch.tensor([float(i), 10.0 ** i]))
        t = shards.sum(s * (i + 1))
        return draw, s, t

    results = shards.run(fn)
    for draw, s, t in results:
        assert torch.equal(draw, expected_draw)
        assert s.tolist() == [3.0, 111.0] and t.tolist() == [18.0, 666.0]
    assert torch.equal(torch.rand(2), expected_next)  # the run continues from shard 0's generator


def test_turn_shards_failure_ends_every_shard_with_the_error():
    shards = TurnShards(2)

    def fn(i):
        if i == 1:
            raise FloatingPointError("loss is nan")
        return shards.sum(torch.ones(1))  # shard 0 waits for shard 1's part

    with pytest.raises(FloatingPointError, match="loss is nan"):
        shards.run(fn)
    assert shards.run(lambda i: shards.sum(torch.ones(1)).item()) == [2.0, 2.0]  # usable again


def test_global_batchnorm_keeps_the_parameter_objects():
    from onebit.models import create_model
    from onebit.train.distributed import GlobalBatchNorm, convert_global_batchnorm

    model = create_model("cnn_small_1w1a", 10, in_channels=1, image_size=8)
    before = list(model.parameters())  # what an optimizer built before the conversion holds
    convert_global_batchnorm(model)
    assert any(isinstance(m, GlobalBatchNorm) for m in model.modules())
    assert all(a is b for a, b in zip(before, model.parameters(), strict=True))


STEP = r'''
import sys, torch
import torch.nn.functional as F
from onebit.models import create_model
from onebit.train.distributed import Distributed, Parallel
out, mode = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = create_model("cnn_small_1w1a", 10, in_channels=1, image_size=8)
x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
d = Distributed.from_env(use_cuda=False)
shards = 2 if mode == "shards" else 0
parallel = Parallel(model, d, shards=shards, exact=mode != "plain")
part = lambda r: (x[32 * r:32 * (r + 1)].clone(), y[32 * r:32 * (r + 1)].clone())
batch = part(d.rank) if d.enabled else [part(0), part(1)] if shards else (x, y)
def loss(m, xs, ys):
    logits = m(xs)
    return logits, F.cross_entropy(logits, ys)
parallel.step(loss, batch)
if d.is_main:
    torch.save({"grad": [p.grad for p in model.parameters()], "buffers": list(model.buffers())}, out)
parallel.close()
d.close()
'''


def _step(tmp_path, name, mode, processes):
    script = tmp_path / "step.py"
    script.write_text(STEP)
    out = str(tmp_path / f"{name}.pt")
    if processes == 1:
        subprocess.run([sys.executable, str(script), out, mode], check=True, capture_output=True, env=ONE_THREAD_ENV)
    else:
        result = torchrun(str(script), out, mode)
        assert result.returncode == 0, failure(result)
    return torch.load(out)


@pytest.mark.slow
def test_two_process_step_is_the_two_shard_step_bit_for_bit(tmp_path):
    one, two = _step(tmp_path, "one", "shards", 1), _step(tmp_path, "two", "exact", 2)
    for a, b in zip(one["grad"] + one["buffers"], two["grad"] + two["buffers"]):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_plain_ddp_step_equals_the_whole_batch_step_up_to_rounding(tmp_path):
    one, two = _step(tmp_path, "whole", "whole", 1), _step(tmp_path, "ddp", "plain", 2)
    for a, b in zip(one["grad"], two["grad"]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(one["buffers"], two["buffers"]):  # batch statistics over the global batch
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


FAIL = r'''
import os, sys
from onebit.train.distributed import Distributed
d = Distributed.from_env(use_cuda=False)
if d.rank == 1:
    os.abort() if sys.argv[1] == "abort" else sys.exit("rank 1: out of data (simulated)")
d.barrier()
'''


@pytest.mark.slow
@pytest.mark.parametrize("how", ["abort", "exit"])
def test_a_failing_process_leaves_a_message(tmp_path, how):
    script = tmp_path / "fail.py"
    script.write_text(FAIL)
    result = torchrun(str(script), how)
    assert result.returncode != 0
    if how == "abort":  # native crashes print the Python stack of every thread
        assert "Fatal Python error: Aborted" in result.stderr and "fail.py" in result.stderr
    else:
        assert "rank 1: out of data (simulated)" in result.stderr


ROTATION_SCRIPT = r'''
import sys, torch
from onebit.models import create_model
from onebit.quant.rbnn import RbnnWeight, random_orthogonal
from onebit.train.distributed import Distributed
torch.manual_seed(0)
model = create_model("cnn_small_1w1a", 10, in_channels=1, image_size=8, method="rbnn")
d = Distributed.from_env(use_cuda=False)
quantizers = [m for m in model.modules() if isinstance(m, RbnnWeight)]
torch.manual_seed(1 + d.rank)
for q in quantizers:  # every rank starts from other rotations: only a broadcast makes them agree
    q.R1.copy_(random_orthogonal(q.a))
before = [q.R1.clone() for q in quantizers]
for q in quantizers:  # what the engine does at the start of an epoch
    q.on_epoch_start(0, 1)
d.broadcast_buffers(model)
torch.save({"before": before, "after": [q.R1 for q in quantizers]}, f"{sys.argv[1]}.{d.rank}")
d.close()
'''


@pytest.mark.slow
def test_rbnn_rotation_update_runs_on_rank0_and_is_broadcast(tmp_path):
    script = tmp_path / "rotate.py"
    script.write_text(ROTATION_SCRIPT)
    result = torchrun(str(script), str(tmp_path / "r"))
    assert result.returncode == 0, failure(result)
    rank0, rank1 = torch.load(tmp_path / "r.0"), torch.load(tmp_path / "r.1")
    assert not torch.equal(rank0["before"][0], rank1["before"][0])
    for a, b, old in zip(rank0["after"], rank1["after"], rank0["before"]):
        assert torch.equal(a, b) and not torch.equal(a, old)  # rank 0 updated, rank 1 received it
