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
