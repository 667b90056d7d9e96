"""The embedded default: the whole VISTA-R1 loop on a tiny policy, offline, on 2 CPU cores.

    vista-train --config configs/tiny_cpu.py
    vista-train --config configs/tiny_cpu.py --config.rl.group_size=4 --config.name=g4

Starts the tool server on 127.0.0.1, trains a BPE tokenizer on the task text, generates
expert trajectories with the real tools, runs SFT then GRPO on a tiny Qwen2.5-VL-architecture
policy, evaluates base / SFT / SFT+GRPO on held-out tasks and writes runs/<name>/.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "tiny_cpu"  # run name; outputs go to <run_root>/<name>/
    c.run_root = "runs"  # parent directory of run directories
    c.seed = 0  # seeds params, task sampling and rollouts

    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = (-1, 1, 1)  # devices along (data, fsdp, tensor); -1 = all remaining devices
    c.mesh.rules = "default"  # logical-axis rules: "default" | "data_parallel", then optional overrides "default,heads=none,mlp=fsdp+tensor"

    c.tools = ml_collections.ConfigDict()
    c.tools.url = ""  # tool server URL; "" starts a local server subprocess on 127.0.0.1
    c.tools.timeout_s = 30.0  # per-request client timeout, seconds
    c.tools.num_workers = 1  # local worker processes for model-backed tools (ocr, hf backends); 0 = in the server

    c.env = ml_collections.ConfigDict()
    c.env.mixture = "chart_qa"  # task families and weights: "chart_qa" | "chart_qa:2,geometry:1" | "all"
    c.env.difficulty = 1  # task level 1..3; 0 = drawn per task from the seed
    c.env.max_turns = 4  # assistant turns per episode before truncation
    c.env.prompt_tokens = 256  # budget: system + user message (images included); ≤ max(rollout.prompt_buckets)
    c.env.turn_tokens = 48  # budget: tokens per assistant turn (the sampler's max new tokens)
    c.env.observation_tokens = 112  # budget: one tool response, cut with "[...]" beyond it; < max(rollout.obs_buckets)
    c.env.trajectory_tokens = 512  # budget: prompt + turns + observations; ≤ rollout.max_context
    c.env.system_prompt_style = "minimal"  # minimal (signatures) | compact (line per tool) | full (JSON schemas)
    c.env.tools = "bar_values,chart_to_table,calculator,crop"  # comma-separated tools shown to the policy ("" = all 26, "none" = no tools: answer directly)

    c.reward = ml_collections.ConfigDict()
    c.reward.correct_weight = 1.0  # weight of R_correct (verified answer, 0/1)
    c.reward.format_penalty = 0.1  # subtracted for a malformed turn or no answer (keep ≤ 0.2)
    c.reward.repetition_penalty = 0.1  # subtracted for a repeated identical tool call
    c.reward.expression_timeout_s = 2.0  # sympy equivalence check of expression answers, in a worker process

    c.tokenizer = ml_collections.ConfigDict()
    c.tokenizer.path = ""  # HF tokenizer dir; "" = model.checkpoint's, or (no checkpoint) train a BPE on the expert trajectories (cached in the run dir)
    c.tokenizer.vocab_size = 1024  # BPE vocabulary size, including special tokens

    c.model = ml_collections.ConfigDict()
    c.model.checkpoint = ""  # local HF Qwen2.5-VL checkpoint dir: the policy starts from its weights, its config.json fixes the sizes
    c.model.preset = ""  # "" = the sizes below; qwen2_5_vl_3b | qwen2_5_vl_7b = that checkpoint's shapes (size fields ignored)
    c.model.embed_dim = 128  # decoder hidden size
    c.model.num_layers = 4  # decoder layers
    c.model.num_heads = 4  # query heads
    c.model.num_kv_heads = 2  # key/value heads (GQA)
    c.model.head_dim = 32  # per-head dim; mrope sections sum to head_dim // 2
    c.model.mlp_dim = 384  # SwiGLU hidden size
    c.model.mrope_section = (4, 6, 6)  # rotary half-dim split over (temporal, height, width)
    c.model.rope_theta = 10000.0  # rotary base
    c.model.tie_word_embeddings = False  # True reuses the token embedding as the LM head (see docs/design.md)
    c.model.vision_embed_dim = 64  # vision tower hidden size
    c.model.vision_num_layers = 2  # vision blocks
    c.model.vision_num_heads = 2  # vision heads
    c.model.vision_mlp_dim = 128  # vision MLP hidden size
    c.model.image_size = 56  # images are resized to image_size² px (multiple of 28) for the policy
    c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (norms, softmax, logits stay float32)
    c.model.param_dtype = "float32"  # stored params and optimizer state: float32 (master weights) | bfloat16
    c.model.remat = "none"  # decoder-layer rematerialisation in training: none | full (recompute layers) | dots (keep weight matmuls)

    c.rollout = ml_collections.ConfigDict()
    c.rollout.max_context = 512  # KV-cache slots per row (prompt + all turns + padding)
    c.rollout.prompt_buckets = (64, 128, 256)  # prompt lengths are padded to one of these
    c.rollout.obs_buckets = (32, 64, 128)  # observation chunks are padded to one of these
    c.rollout.max_images_per_chunk = 1  # images one prompt or tool observation may carry
    c.rollout.max_images = 4  # images per trajectory in a training batch (prompt + tool images)
    c.rollout.train_buckets = (256, 384, 512)  # RL batches are padded to the smallest that fits
    c.rollout.temperature = 0.7  # sampling temperature for RL rollouts, also used by the learner's log-probs (eval is greedy)
    c.rollout.top_k = 0  # sample among the k most likely tokens (0 = off); the learner renormalises the same way
    c.rollout.top_p = 1.0  # then within the smallest set holding this probability mass (1.0 = off); learner likewise

    c.sft = ml_collections.ConfigDict()
    c.sft.data = ""  # expert trajectories JSONL (vista-expert's format, rendered as recorded: match its system prompt to env.*) to train on; "" = generate sft.num_trajectories here
    c.sft.expert = "tools"  # expert trajectories: "tools" (reference plans through the real tools) | "direct" (the gold answer at once, no tool call; with env.tools="none")
    c.sft.num_trajectories = 1024  # expert trajectories generated (then filtered to verified); also where RL prompts start
    c.sft.steps = 900  # optimizer steps (600 ends right at the label-copy transition: README, docs/design.md)
    c.sft.batch_size = 16  # sequences per step
    c.sft.micro_batches = 1  # sequential slices of a step's batch (exact gradient accumulation); divides batch_size
    c.sft.seq_len = 256  # packed length; longer trajectories are dropped and counted
    c.sft.learning_rate = 2e-3  # peak learning rate (warmup then cosine)
    c.sft.warmup_steps = 30  # linear warmup steps
    c.sft.weight_decay = 0.0  # AdamW weight decay
    c.sft.copy_weight = 20.0  # loss weight of assistant tokens copied from the question/tool responses (1 = plain NLL)
    c.sft.copy_balance = 0.5  # copied ids weigh copy_weight * (mean count / their count) ** this (0 = all equal)
    c.sft.validate_every = 150  # greedy val-split accuracy (and teacher-forced val loss) every this many steps; best is kept (0 = off)
    c.sft.validate_tasks = 32  # val-split tasks per validation (their verified expert trajectories give the val loss)
    c.sft.init_from = ""  # run dir whose SFT checkpoint and tokenizer replace this SFT phase ("" = train)

    c.rl = ml_collections.ConfigDict()
    c.rl.algorithm = "grpo"  # grpo | dr_grpo (no std) | dapo (grpo + dynamic sampling) | ppo (critic + GAE)
    c.rl.policy_loss = "ppo_clip"  # registered policy loss
    c.rl.loss_agg = "token-mean"  # token-mean | seq-mean-token-mean | seq-mean-token-sum-norm
    c.rl.steps = 24  # rollout + update iterations
    c.rl.prompts_per_step = 8  # distinct tasks per step
    c.rl.group_size = 8  # samples per task (G)
    c.rl.learning_rate = 5e-5  # constant learning rate after warmup
    c.rl.warmup_steps = 5  # linear warmup steps
    c.rl.clip_eps_low = 0.2  # ratio clip below: 1 - clip_eps_low
    c.rl.clip_eps_high = 0.2  # ratio clip above: 1 + clip_eps_high (DAPO's clip-higher: 0.28)
    c.rl.overlong_buffer = 0  # DAPO overlong shaping: last this many tokens before overlong_max_tokens ramp the reward down; 0 = off
    c.rl.overlong_max_tokens = 512  # generated tokens per episode at which the shaping reaches -overlong_penalty
    c.rl.overlong_penalty = 1.0  # size of the full overlong penalty
    c.rl.dual_clip = 0.0  # dual-clip bound c > 1 on negative-advantage tokens' loss (-c·A); 0 = off
    c.rl.kl_coef = 0.0  # weight of the KL to the frozen SFT policy; 0 skips the reference pass
    c.rl.kl_estimator = "k3"  # per-token KL estimator: k1 (logp - ref) | k3 (Schulman's, ≥ 0)
    c.rl.updates_per_rollout = 1  # optimizer steps per rollout batch (minibatches)
    c.rl.micro_batches = 1  # sequential slices of each minibatch (exact gradient accumulation)
    c.rl.max_grad_norm = 1.0  # global gradient clip
    c.rl.dynamic_sampling_max_rounds = 4  # dapo: rollout rounds per step to collect prompts_per_step groups with unequal rewards
    c.rl.critic = "shared"  # ppo: "shared" (value head on the policy trunk) | "separate" (own trunk, initialised from the policy)
    c.rl.value_coef = 0.5  # ppo: weight of the value loss (shared trunk: added to the policy loss)
    c.rl.value_clip = 0.2  # ppo: new values stay within ± this of the rollout's (0 = unclipped)
    c.rl.critic_learning_rate = 1e-4  # ppo: learning rate of the value head (and of a separate critic's trunk)
    c.rl.gae_gamma = 1.0  # ppo: discount per generated token
    c.rl.gae_lambda = 0.95  # ppo: GAE lambda

    c.eval = ml_collections.ConfigDict()
    c.eval.num_tasks = 96  # held-out (test split) tasks per evaluation
    c.eval.batch_size = 32  # episodes decoded together
    c.eval.policies = "base,sft,grpo"  # policies the job evaluates: any of base (untrained), sft (after SFT), grpo (after RL, any algorithm)
    c.eval.mixture = ""  # test tasks' families ("" = env.mixture; "all" tests a single-family policy on every family)
    c.eval.tools = ""  # tools shown at evaluation ("" = env.tools; "none" = no tools; a list = prompted with other tools than trained with)

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.sft_every = 150  # Orbax checkpoint every this many SFT steps (and at the end; 0 = only at the end)
    c.checkpoint.rl_every = 4  # every this many RL steps (and at the end; 0 = only at the end)
    c.checkpoint.keep = 3  # checkpoints kept (the newest; phase ends are kept too)
    c.checkpoint.async_save = True  # write in a background thread while training goes on
    c.checkpoint.resume = True  # a run dir with checkpoints resumes from the newest (exactly); False starts over

    c.log = ml_collections.ConfigDict()
    c.log.every = 5  # log SFT and RL metrics every this many steps (printed every 10x that in SFT, every time in RL)
    c.log.trajectories = 64  # evaluation trajectories written per policy
    c.log.tensorboard = True  # also write TensorBoard event files to <run dir>/tensorboard/

    # Multi-host (vista_jax/distributed.py); env JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
    # JAX_PROCESS_ID / JAX_DISTRIBUTED_AUTO override these, so one file serves every host.
    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator_address = ""  # "host:port" of process 0; "" = single process
    c.distributed.num_processes = 1  # processes in the job (one per host); 1 = no jax.distributed
    c.distributed.process_id = 0  # this process's index in [0, num_processes)
    c.distributed.auto_detect = False  # True: jax.distributed.initialize() finds peers (TPU pods, SLURM)
    return c
