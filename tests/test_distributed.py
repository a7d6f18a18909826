"""One DDP step over two processes computes the gradients of one process on the global batch."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import torch

SCRIPT = r'''
import os, sys, torch
from onebit.models import create_model
from onebit.train.distributed import Distributed, convert_global_batchnorm
torch.manual_seed(0)
model = create_model("cnn_small_1w1a", 10, in_channels=1, image_size=8)
x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
d = Distributed.from_env(use_cuda=False)
if d.enabled:
    convert_global_batchnorm(model)
    net = torch.nn.parallel.DistributedDataParallel(model)
    half = 64 // d.world_size
    x, y = x[d.rank * half:(d.rank + 1) * half], y[d.rank * half:(d.rank + 1) * half]
else:
    net = model
torch.nn.functional.cross_entropy(net(x), y).backward()
d.barrier()
if d.is_main:
    torch.save({"grad": torch.cat([p.grad.flatten() for p in model.parameters()]),
                "running_mean": [m.running_mean for m in model.modules() if hasattr(m, "running_mean")]},
               sys.argv[1])
d.barrier()
d.close()
'''


def test_ddp_step_equals_single_process_step(tmp_path):
    script = tmp_path / "step.py"
    script.write_text(SCRIPT)
    subprocess.run([sys.executable, str(script), str(tmp_path / "one.pt")], check=True, capture_output=True)
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path / "two.pt")],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert torch.allclose(one["grad"], two["grad"], rtol=1e-4, atol=1e-5)
    for a, b in zip(one["running_mean"], two["running_mean"]):  # batch statistics over the global batch
        assert torch.allclose(a, b, atol=1e-6)


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


def test_rbnn_rotation_update_runs_on_rank0_and_is_broadcast(tmp_path):
    script = tmp_path / "rotate.py"
    script.write_text(ROTATION_SCRIPT)
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path / "r")],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    rank0, rank1 = torch.load(tmp_path / "r.0"), torch.load(tmp_path / "r.1")
    assert not torch.equal(rank0["before"][0], rank1["before"][0])
    for a, b, old in zip(rank0["after"], rank1["after"], rank0["before"]):
        assert torch.equal(a, b) and not torch.equal(a, old)  # rank 0 updated, rank 1 received it
