"""Qwen2.5-VL-7B-Instruct on a Cloud TPU v5p-64 slice.

Assumption: v5p-64 counts TensorCores; a v5p chip has 2 (megacore), so the slice is 32 chips
that JAX sees as 32 devices, on 8 hosts of 4 chips, 95 GiB HBM per chip. Other slices: keep
fsdp * tensor = 32 or change mesh.shape; data = -1 takes whatever is left.

Overrides configs/qwen2_5_vl_7b_gpu.py (itself the 3B GPU config on the 7B preset). Copy the
HF checkpoint to every host (or a shared disk) and set `model.checkpoint`; the job stops at
start, naming config.model.checkpoint, until it exists. Run the same command on all workers;
`distributed.auto_detect` lets jax.distributed find the slice's coordinator and ids:

    gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all --command="\\
        cd vista-jax && vista-train --config configs/qwen2_5_vl_7b_tpu.py \\
        --config.model.checkpoint=/data/Qwen2.5-VL-7B-Instruct"

Check the per-chip memory on a CPU first (no allocation):

    python benchmarks/compile_memory.py --config configs/qwen2_5_vl_7b_tpu.py --devices 32 --hbm-gib 95
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from qwen2_5_vl_7b_gpu import get_config as get_7b_gpu_config  # noqa: E402


def get_config():
    c = get_7b_gpu_config()
    c.name = "qwen2_5_vl_7b_tpu"  # run name; outputs go to runs/qwen2_5_vl_7b_tpu/
    c.distributed.auto_detect = True  # jax.distributed.initialize() reads the TPU slice metadata
    # 32 chips: params 8-way FSDP, heads / kv heads / vocab 4-way tensor over ICI; data = -1
    # is 1 on v5p-64 and grows with larger slices. ~75 GiB of 95 per chip for the 16K-token
    # update; 24K tokens would need ~110 (benchmarks/compile_memory.py).
    c.mesh.shape = (-1, 8, 4)  # (data, fsdp, tensor)
    c.rl.micro_batches = 8  # 64 rows per update / 8 batch shards -> 1 row per chip per micro-batch
    c.sft.micro_batches = 8  # 64 rows per step / 8 batch shards -> 1 row per chip per micro-batch
    c.tools.num_workers = 4  # tool workers per host (TPU VM hosts have fewer spare cores)
    return c
