"""Random-weight transformers checkpoints built locally, for tests and benchmarks (no download).

A model-backed tool loads a real checkpoint directory with `from_pretrained`; these builders
write directories of the same shape (config, random weights, tokenizer, processor) so the
loading code, batching and output handling run for real without weights we cannot ship.
Their outputs are meaningless: use them for plumbing and timing, never for accuracy.
"""

from __future__ import annotations

import os


def build_random_owlvit(directory: str | os.PathLike, *, image_size: int = 32,
                        patch_size: int = 8, vision_hidden: int = 16, vision_layers: int = 1,
                        text_hidden: int = 16, text_layers: int = 1, heads: int = 2,
                        seed: int = 0) -> str:
    """Saves a random OWL-ViT and its processor to `directory`; returns the path.

    The defaults give ~10k parameters (32x32 input, 8x8 patches: 16 boxes per image); larger
    sizes give a model whose cost per forward resembles a real detector's. The tokenizer is
    character-level BPE over a-z (each letter alone and at a word's end, no merges), with the
    special tokens last because OWL-ViT treats a query whose first id is 0 as padding.
    """
    import torch
    from transformers import CLIPTokenizer, OwlViTConfig, OwlViTForObjectDetection, OwlViTProcessor
    from transformers.models.owlvit.image_processing_pil_owlvit import OwlViTImageProcessorPil

    vocab: dict[str, int] = {}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    # The PIL image processor: the default one needs torchvision, which we do not install.
    size = {"height": image_size, "width": image_size}
    image_processor = OwlViTImageProcessorPil(size=size, crop_size=size)
    processor = OwlViTProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = OwlViTConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=text_hidden,
                         intermediate_size=2 * text_hidden, num_hidden_layers=text_layers,
                         num_attention_heads=heads, max_position_embeddings=16,
                         bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                           num_hidden_layers=vision_layers, num_attention_heads=heads,
                           image_size=image_size, patch_size=patch_size),
        projection_dim=text_hidden)
    torch.manual_seed(seed)
    model = OwlViTForObjectDetection(config).eval()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return str(directory)
