"""`actsweep sample --ckpt_path CKPT --prompt TEXT`: text from a trained model, on the CPU.

The prompt is encoded with the tokenizer the checkpoint's run trained with, rebuilt from the data
settings saved in the checkpoint (a char vocabulary from that run's token cache, or from its corpus
when the cache is gone), continued by `GPT.generate` and decoded. The same seed gives the same text.
"""

from __future__ import annotations

from typing import Any

import torch

from actsweep.data.module import TextDataModule
from actsweep.data.tokenizers import Tokenizer
from actsweep.errors import ConfigError, OneLineParser
from actsweep.export import load_gpt
from actsweep.model.sampling import check_sampling
from actsweep.train.checkpoints import load_checked

SEPARATOR = "---"  # the line between samples


def checkpoint_tokenizer(checkpoint: dict[str, Any]) -> Tokenizer:
    """The tokenizer of the run that wrote `checkpoint`, with the vocabulary its model was trained on."""
    data = checkpoint.get("datamodule_hyper_parameters")
    if not data:
        raise ConfigError("the checkpoint records no data settings (no datamodule_hyper_parameters), "
                          "so its tokenizer is unknown; sample from a checkpoint written by actsweep fit")
    tokenizer = TextDataModule(**{k: v for k, v in data.items() if k != "_instantiator"}).tokenizer
    trained = checkpoint["hyper_parameters"]["vocab_size"]
    if tokenizer.n_vocab != trained:
        raise ConfigError(f"the {tokenizer.name} tokenizer rebuilt from the run's data has {tokenizer.n_vocab} tokens, "
                          f"the model {trained}: its corpus changed since training")
    return tokenizer


def main(argv: list[str] | None = None) -> int:
    """`actsweep sample`; bad input raises an `ActSweepError`, which `actsweep.cli` prints as one line."""
    parser = OneLineParser(prog="actsweep sample", description=__doc__)
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint, e.g. <run>/checkpoints/last.ckpt")
    parser.add_argument("--prompt", required=True, help="the text to continue (at least one token)")
    parser.add_argument("--max_new_tokens", type=int, default=200, help="tokens to add (default 200)")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="divides the logits: below 1 more likely tokens, 0 always the most likely (default 1)")
    parser.add_argument("--top_k", type=int, default=None, help="draw only from the K most likely tokens (default all)")
    parser.add_argument("--seed", type=int, default=1337, help="seed of the draws (default 1337)")
    parser.add_argument("--num_samples", type=int, default=1, help=f"samples, printed apart by a {SEPARATOR} line (default 1)")
    args = parser.parse_args(argv)
    check_sampling(args.max_new_tokens, args.temperature, args.top_k)
    if args.num_samples < 1:
        raise ConfigError(f"--num_samples must be >= 1, got {args.num_samples}")
    if not args.prompt:
        raise ConfigError("--prompt is empty; give at least one character to continue")
    tokenizer = checkpoint_tokenizer(load_checked(args.ckpt_path))
    prompt = torch.tensor([tokenizer.encode(args.prompt)] * args.num_samples)
    generator = torch.Generator().manual_seed(args.seed)
    ids = load_gpt(args.ckpt_path).generate(prompt, args.max_new_tokens, args.temperature, args.top_k, generator)
    print(f"\n{SEPARATOR}\n".join(tokenizer.decode(row.tolist()) for row in ids))
    return 0
