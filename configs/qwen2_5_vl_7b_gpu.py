"""Qwen2.5-VL-7B-Instruct on 8-GPU hosts (H200 141 GB / H100 80 GB), one or many hosts.

Set `model.checkpoint` to a local copy of the HF checkpoint (config.json, safetensors shards,
tokenizer files); the job stops at start, naming config.model.checkpoint, until it exists.

One host, 8 GPUs:

    vista-train --config configs/qwen2_5_vl_7b_gpu.py \\
        --config.model.checkpoint=/data/Qwen2.5-VL-7B-Instruct

N hosts (the same command on every host; host 0's address; mesh data=-1 takes the hosts,
so keep rl.prompts_per_step * group_size / (updates_per_rollout * micro_batches) a multiple
of data * fsdp, e.g. --config.rl.prompts_per_step=$((32 * N))):

    JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=$N JAX_PROCESS_ID=$i \\
    vista-train --config configs/qwen2_5_vl_7b_gpu.py \\
        --config.model.checkpoint=/data/Qwen2.5-VL-7B-Instruct --config.rl.prompts_per_step=$((32 * N))

Check the per-GPU memory before renting the machines (CPU only, no allocation):

    python benchmarks/compile_memory.py --config configs/qwen2_5_vl_7b_gpu.py --hbm-gib 141
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from qwen2_5_vl_3b_gpu import get_config as get_3b_config  # noqa: E402


def get_config():
    c = get_3b_config()  # every context, env, RL and data field of the 3B GPU config
    c.name = "qwen2_5_vl_7b_gpu"  # run name; outputs go to runs/qwen2_5_vl_7b_gpu/
    c.model.preset = "qwen2_5_vl_7b"  # Qwen2.5-VL-7B-Instruct shapes (28 layers, D 3584, untied head)
    c.model.checkpoint = "/path/to/Qwen2.5-VL-7B-Instruct"  # local HF checkpoint dir (weights + tokenizer): SET THIS
    # 28 heads / 4 kv heads / vocab split 4 ways over NVLink, params (embed dims) 2 ways;
    # data = -1 spans hosts. Tensor 4 quarters each GPU's [heads, T, T] attention scores and
    # [T, vocab] logits: ~101 GiB per GPU for the 16K-token update (benchmarks/compile_memory.py).
    c.mesh.shape = (-1, 2, 4)  # (data, fsdp, tensor) per 8-GPU host
    c.rl.micro_batches = 32  # 64 rows per update / 2 batch shards -> 1 row per GPU per micro-batch
    c.sft.micro_batches = 32  # 64 rows per step / 2 batch shards -> 1 row per GPU per micro-batch
    return c
