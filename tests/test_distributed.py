"""Shards of a global batch: W processes, or one process taking the W shards in turns, compute the
same step; plain DDP computes it up to rounding; a failing process says why."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from onebit.train.distributed import Distributed, TurnShards, ordered_sum

from distributed_steps import step
from helpers import ONE_THREAD_ENV

# One intra-op thread here, as in each torchrun process (OMP_NUM_THREADS=1): the sums depend on it.
pytestmark = pytest.mark.usefixtures("one_thread")

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


def test_global_batchnorm_under_bfloat16_autocast_keeps_float32_statistics():
    from onebit.train.distributed import GlobalBatchNorm, set_active_shards

    x = torch.randn(2, 4, 5, 6, generator=torch.Generator().manual_seed(0)) * 3 + 1
    reference = torch.nn.BatchNorm2d(4).train()
    expected = reference(x.bfloat16().float())
    shards = TurnShards(2)
    norms = [GlobalBatchNorm(4).train() for _ in range(2)]  # a replica per shard, as the trainer has
    set_active_shards(shards)
    try:  # the two shards hold one image each; their statistics are the whole batch's
        outs = shards.run(lambda i: norms[i](x[i:i + 1].bfloat16()))
    finally:
        set_active_shards(None)
    norm = norms[0]
    assert all(out.dtype == torch.bfloat16 for out in outs)
    assert norm.running_mean.dtype == torch.float32
    torch.testing.assert_close(norm.running_mean, reference.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norm.running_var, reference.running_var, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.cat(outs).float(), expected, rtol=1e-2, atol=1e-2)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Every mode of distributed_steps.py under one torchrun launch of 2 processes: rank -> results."""
    out = tmp_path_factory.mktemp("torchrun") / "steps"
    result = torchrun(str(Path(__file__).with_name("distributed_steps.py")), str(out))
    assert result.returncode == 0, failure(result)
    return [torch.load(f"{out}.{rank}") for rank in range(2)]


def one_process_step(mode: str) -> dict:
    return step(mode, Distributed.from_env(use_cuda=False))


@pytest.mark.slow
def test_two_process_step_is_the_two_shard_step_bit_for_bit(two_processes):
    one, two = one_process_step("shards"), two_processes[0]["exact"]
    for a, b in zip(one["grad"] + one["buffers"], two["grad"] + two["buffers"], strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_plain_ddp_step_equals_the_whole_batch_step_up_to_rounding(two_processes):
    one, two = one_process_step("whole"), two_processes[0]["plain"]
    for a, b in zip(one["grad"], two["grad"], strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(one["buffers"], two["buffers"], strict=True):  # batch statistics over the global batch
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


@pytest.mark.slow
def test_rbnn_rotation_update_runs_on_rank0_and_is_broadcast(two_processes):
    rank0, rank1 = (results["rotation"] for results in two_processes)
    assert not torch.equal(rank0["before"][0], rank1["before"][0])
    for a, b, old in zip(rank0["after"], rank1["after"], rank0["before"]):
        assert torch.equal(a, b) and not torch.equal(a, old)  # rank 0 updated, rank 1 received it
