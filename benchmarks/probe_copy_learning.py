"""Learning probe: how fast does the tiny policy learn to copy a word from the question?

The embedded default's policy must copy labels ("Plum") from the question into its thinking
and tool arguments. On the real SFT data it had not learnt that after 600-1500 steps
(docs/design.md). This probe isolates the copy on synthetic sequences shaped like an SFT
row, with the tiny config's model and the project's train step, and varies one factor at a
time:

    [BOS] [40 fixed prefix tokens] [4 image tokens] [SEP] question [SEP] answer

The question is one of 3 templates with a label (1 of 36) inside; the answer is one of 4
lead-ins, the label, then `--template-tokens` fixed tokens (the protocol scaffolding a real
row has in its loss). Loss is on the answer only; the printed `label_acc` is teacher-forced
accuracy on the label token of fresh sequences.

    python benchmarks/probe_copy_learning.py                    # untied head: learnt by step 300
    python benchmarks/probe_copy_learning.py --tied             # tied + 60 template tokens: not in 400
    python benchmarks/probe_copy_learning.py --tied --template-tokens 0   # tied, no scaffolding: 400
    python benchmarks/probe_copy_learning.py --space-tokens     # a space between all words: not in 400

Measured on 2 CPU cores, 2026-11-25 (seed 0, lr 2e-3, batch 16): see docs/design.md.
Synthetic data only: it says what slows copy learning, not what the real task needs.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vista_jax.models import ModelConfig, Qwen25VL
from vista_jax.rl.train_step import make_optimizer, make_train_step, policy_logits, sft_loss

SPACE, BOS, SEP, SEP2 = 9, 1, 2, 3
LABELS = np.arange(100, 136)
QUESTIONS = ([300, 301, 302, 303, None, 304], [310, 311, None, 312], [320, 321, 322, None, 323, 324, 325])
LEAD_INS = ([500, 501, 502], [510, 511], [520], [530, 531, 532, 533])


def make_batch(rng, args, prefix, patches):
    vocab, length, b = args.vocab, args.seq_len, args.batch_size
    tokens = np.zeros((b, length), np.int32)
    mask = np.zeros((b, length), np.float32)
    label_at = np.zeros((b,), np.int32)
    for i in range(b):
        label = int(rng.choice(LABELS))
        question = [label if t is None else t for t in QUESTIONS[rng.integers(len(QUESTIONS))]]
        answer = list(LEAD_INS[rng.integers(len(LEAD_INS))]) + [label, 503]
        answer += list(range(600, 600 + args.template_tokens))
        if args.space_tokens:  # a space id between all words, as a space-isolating BPE makes
            question = [y for x in question for y in (x, SPACE)][:-1]
            answer = [y for x in answer for y in (x, SPACE)][:-1]
        seq = [BOS] + prefix + [vocab - 1] * 4 + [SEP] + question + [SEP2] + answer
        if len(seq) > length:
            raise ValueError(f"sequence of {len(seq)} tokens exceeds --seq-len {length}")
        tokens[i, :len(seq)] = seq
        mask[i, len(seq) - len(answer):len(seq)] = 1
        label_at[i] = len(seq) - len(answer) + answer.index(label)
    positions = np.broadcast_to(np.arange(length)[None, None], (b, 3, length)).astype(np.int32)
    batch = {"tokens": tokens, "positions": positions, "valid": tokens > 0, "loss_mask": mask,
             "old_logprobs": np.zeros((b, length), np.float32), "patches": patches}
    return batch, label_at


def main(argv=None) -> list[tuple[int, float, float]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tied", action="store_true", help="tie the LM head to the token embedding")
    p.add_argument("--space-tokens", action="store_true", help="a space token between all words")
    p.add_argument("--template-tokens", type=int, default=60, help="fixed loss tokens after the label")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=320)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    cfg = ModelConfig(vocab_size=args.vocab, embed_dim=128, num_layers=4, num_heads=4,
                      num_kv_heads=2, head_dim=32, mlp_dim=384, mrope_section=(4, 6, 6),
                      vision_embed_dim=64, vision_num_layers=2, vision_num_heads=2,
                      vision_mlp_dim=128, image_pad_id=args.vocab - 1,
                      tie_word_embeddings=args.tied)
    graphdef, params, rest = nnx.split(Qwen25VL(cfg, rngs=nnx.Rngs(args.seed)), nnx.Param, ...)
    tx = make_optimizer(args.lr, warmup_steps=30, total_steps=max(args.steps, 1000))
    opt_state = tx.init(params)
    grid = (4, 4)  # a 56 px image: 16 patches -> 4 tokens after the 2x2 merge
    step = make_train_step(graphdef, rest, sft_loss, tx, grid)
    predict = jax.jit(lambda p, b: jnp.argmax(policy_logits(nnx.merge(graphdef, p, rest), b, grid), -1))

    rng = np.random.default_rng(args.seed)
    prefix = list(rng.integers(200, 300, 40))
    patches = rng.normal(size=(args.batch_size, 1, 16, 3 * 2 * 14 * 14)).astype(np.float32)
    curve = []
    t0 = time.perf_counter()
    for s in range(1, args.steps + 1):
        batch, _ = make_batch(rng, args, prefix, patches)
        params, opt_state, metrics = step(params, opt_state, batch)
        if s % args.every == 0:
            batch, label_at = make_batch(rng, args, prefix, patches)
            pred = np.asarray(predict(params, batch))
            rows = np.arange(args.batch_size)
            acc = float(np.mean(pred[rows, label_at - 1] == batch["tokens"][rows, label_at]))
            curve.append((s, float(metrics["loss"]), acc))
            print(f"step {s:4d}  loss {float(metrics['loss']):.3f}  label_acc {acc:.3f}  "
                  f"{time.perf_counter() - t0:5.0f} s", flush=True)
    return curve


if __name__ == "__main__":
    main()
