"""Qwen2.5-VL-3B-Instruct on 8-GPU hosts (H200 141 GB / H100 80 GB), one or many hosts.

Overrides configs/tiny_cpu.py (big_vision style); every changed field says why. Set
`model.checkpoint` to a local copy of the HF checkpoint (config.json, safetensors shards,
tokenizer files): the policy starts from its weights, with its tokenizer and chat template;
the job stops at start, naming config.model.checkpoint, until it exists.

One host, 8 GPUs:

    vista-train --config configs/qwen2_5_vl_3b_gpu.py \\
        --config.model.checkpoint=/data/Qwen2.5-VL-3B-Instruct

N hosts (the same command on every host, pointing at host 0; mesh data=-1 takes the hosts,
so keep rl.prompts_per_step * group_size / (updates_per_rollout * micro_batches) a multiple
of data * fsdp, e.g. --config.rl.prompts_per_step=$((32 * N))):

    JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=$N JAX_PROCESS_ID=$i \\
    vista-train --config configs/qwen2_5_vl_3b_gpu.py \\
        --config.model.checkpoint=/data/Qwen2.5-VL-3B-Instruct --config.rl.prompts_per_step=$((32 * N))

Check the per-GPU memory before renting the machines (CPU only, no allocation):

    python benchmarks/compile_memory.py --config configs/qwen2_5_vl_3b_gpu.py --hbm-gib 141
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tiny_cpu import get_config as get_tiny_config  # noqa: E402


def get_config():
    c = get_tiny_config()
    c.name = "qwen2_5_vl_3b_gpu"  # run name; outputs go to runs/qwen2_5_vl_3b_gpu/

    # --- policy: the released checkpoint, bf16 compute on fp32 master weights ------------
    c.model.preset = "qwen2_5_vl_3b"  # Qwen2.5-VL-3B-Instruct shapes (36 layers, D 2048, tied head)
    c.model.checkpoint = "/path/to/Qwen2.5-VL-3B-Instruct"  # local HF checkpoint dir (weights + tokenizer): SET THIS
    c.model.dtype = "bfloat16"  # matmuls and activations in bf16 (norms, softmax, logits f32)
    c.model.param_dtype = "float32"  # fp32 master weights and Adam moments
    c.model.remat = "full"  # keep only layer inputs; recompute each layer in the backward pass
    c.model.image_size = 448  # 32x32 patches -> 256 image tokens per image (charts stay legible)

    # --- devices: per host 4-way FSDP x 2-way tensor over NVLink; data parallel across hosts
    # Tensor 2 halves each GPU's [heads, T, T] attention scores and [T, vocab] logits: with
    # fsdp 8 the 16K-token step needs ~170 GiB per GPU, with (4, 2) ~94 GiB
    # (benchmarks/compile_memory.py).
    c.mesh.shape = (-1, 4, 2)  # (data, fsdp, tensor): data = number of hosts

    # --- context: 16K tokens per trajectory, as in the paper's 16K-26K ------------------
    c.rollout.max_context = 16384  # KV-cache slots per row: the whole multi-turn trajectory
    c.env.trajectory_tokens = 16384  # budget: prompt + turns + observations (= max_context)
    c.env.prompt_tokens = 4096  # budget: system prompt with the tool list + question + image
    c.env.turn_tokens = 1024  # budget: one assistant turn (<think> + tool call or answer)
    c.env.observation_tokens = 1536  # budget: one tool response (text + returned image)
    c.env.max_turns = 8  # assistant turns per episode
    c.rollout.prompt_buckets = (1024, 2048, 4096)  # prompt lengths are padded to one of these
    c.rollout.obs_buckets = (256, 512, 1024, 2048)  # tool responses are padded to one of these
    c.rollout.max_images_per_chunk = 2  # images in one prompt or tool response
    c.rollout.max_images = 8  # images per trajectory (prompt + tool outputs such as crops)
    c.rollout.train_buckets = (2048, 4096, 8192, 16384)  # RL rows padded to the smallest that fits
    c.rollout.temperature = 1.0  # sample the policy as it is (on-policy ratio at T=1)

    # --- task environment: every family and level, all 26 tools -------------------------
    c.env.mixture = "all"  # every VISTA-Gym family, equal weights
    c.env.difficulty = 0  # level drawn per task
    c.env.system_prompt_style = "full"  # JSON schemas of the tools (real models read them)
    c.env.tools = ""  # all 26 tools
    c.tools.num_workers = 8  # model-backed tool workers (OCR etc.) beside the trainer
    c.tools.timeout_s = 60.0  # per-request client timeout, seconds

    # --- SFT on verified expert trajectories -------------------------------------------
    c.sft.num_trajectories = 20000  # expert trajectories generated (verified ones kept)
    c.sft.steps = 1000  # optimizer steps (~3 epochs of 64-row batches)
    c.sft.batch_size = 64  # sequences per step (global, all hosts)
    c.sft.micro_batches = 16  # 64 rows / 4 batch shards (data x fsdp) -> 1 row per GPU per micro-batch
    c.sft.seq_len = 8192  # longest expert trajectory kept (the rest are dropped and counted)
    c.sft.learning_rate = 1e-5  # peak learning rate for a pretrained model
    c.sft.warmup_steps = 50  # linear warmup steps
    c.sft.weight_decay = 0.01  # AdamW weight decay
    c.sft.copy_weight = 1.0  # plain NLL (copy up-weighting is a crutch for the tiny policy)
    c.sft.validate_every = 250  # greedy val-split accuracy every this many steps
    c.sft.validate_tasks = 256  # val-split tasks per validation

    # --- GRPO: group size 8 ---------------------------------------------------------------
    c.rl.group_size = 8  # samples per task (G)
    c.rl.prompts_per_step = 32  # tasks per step -> 256 rollouts
    c.rl.updates_per_rollout = 4  # 4 minibatches of 64 rows per rollout batch
    c.rl.micro_batches = 16  # 64 rows / 4 batch shards (data x fsdp) -> 1 row per GPU per micro-batch
    c.rl.steps = 300  # rollout + update iterations
    c.rl.learning_rate = 1e-6  # constant learning rate after warmup
    c.rl.warmup_steps = 10  # linear warmup steps
    c.rl.kl_coef = 0.0  # no reference pass (DAPO-style); > 0 adds a frozen-policy forward

    c.eval.num_tasks = 1000  # held-out tasks per evaluation
    c.eval.batch_size = 128  # episodes decoded together
    c.log.every = 1  # a metrics line every step
    return c
