"""`GPT.generate` against decoding written out here, and `actsweep sample` on a real tiny checkpoint."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from actsweep import cli
from actsweep.data.tokenizers import get_tokenizer
from actsweep.errors import ConfigError
from actsweep.model.gpt import GPT, GPTConfig
from actsweep.sample import checkpoint_tokenizer
from actsweep.train.checkpoints import load_checked
from helpers import finished_fit, fit_error, snapshot

PROMPT = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])


@pytest.fixture(scope="module")
def model() -> GPT:
    """Untrained: its next-token distributions are close to uniform, so different seeds draw differently."""
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=2, n_head=2, n_embd=32)).eval()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny char model fitted for 2 steps; its run folder (logs/tiny/version_0)."""
    folder = tmp_path_factory.mktemp("sample")
    finished_fit(folder)
    return folder / "logs" / "tiny" / "version_0"


def draw(model: GPT, seed: int, **settings) -> torch.Tensor:
    return model.generate(PROMPT, 12, generator=torch.Generator().manual_seed(seed), **settings)


def greedy(model: GPT, idx: torch.Tensor, steps: int) -> torch.Tensor:
    """Argmax decoding, one forward per token on at most block_size tokens."""
    with torch.no_grad():
        for _ in range(steps):
            logits = model(idx[:, -model.cfg.block_size:])
            idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


def test_same_seed_same_tokens(model):
    assert torch.equal(draw(model, 3), draw(model, 3))


def test_different_seeds_differ(model):
    first, second = draw(model, 3), draw(model, 4)
    assert torch.equal(first[:, :4], PROMPT) and torch.equal(second[:, :4], PROMPT)
    assert not torch.equal(first, second)


def test_temperature_zero_is_argmax_decoding(model):
    # 12 new tokens on 4: past block_size 8, so the context must be cropped
    assert torch.equal(draw(model, 3, temperature=0), greedy(model, PROMPT, 12))


def test_top_k_one_is_greedy(model):
    assert torch.equal(draw(model, 3, temperature=1.5, top_k=1), greedy(model, PROMPT, 12))


@pytest.mark.parametrize("seed", range(4))
def test_temperature_divides_the_logits(model, seed):
    # 0.02 makes the untrained model's near-uniform distribution peaked: undivided logits draw elsewhere
    with torch.no_grad():
        probs = F.softmax(model(PROMPT)[:, -1] / 0.02, dim=-1)
    expected = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed))
    step = model.generate(PROMPT, 1, temperature=0.02, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(step[:, -1:], expected)


@pytest.mark.parametrize("settings, message", [
    ({"max_new_tokens": -1}, "max_new_tokens must be >= 0"),
    ({"temperature": -0.5}, "temperature must be a finite number >= 0"),
    ({"temperature": math.nan}, "temperature must be a finite number >= 0"),
    ({"top_k": 0}, "top_k must be >= 1"),
])
def test_bad_settings_refused(model, settings, message):
    with pytest.raises(ConfigError, match=message):
        model.generate(PROMPT, **{"max_new_tokens": 3, **settings})


@pytest.mark.parametrize("name, texts", [("char", ["def main():\n    return 0"]), ("gpt2", None)])
def test_tokenizer_round_trip(name, texts):
    tokenizer = get_tokenizer(name, texts=texts)
    prompt = "def main():"
    ids = tokenizer.encode(prompt)
    assert tokenizer.decode(ids) == prompt
    assert ids == tokenizer.encode_batch([prompt])[0][:-1]  # no separator after a prompt


def sample(args: list[str], capsys) -> str:
    """`actsweep sample ARGS`: its standard output, after exit status 0."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["sample", *args])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_cli_samples_from_a_checkpoint(run, capsys):
    args = ["--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--prompt", "def parse", "--max_new_tokens", "30"]
    first = sample([*args, "--seed", "1", "--num_samples", "2"], capsys)
    assert first == sample([*args, "--seed", "1", "--num_samples", "2"], capsys)
    texts = first.removesuffix("\n").split("\n---\n")
    assert len(texts) == 2 and texts[0] != texts[1]
    assert all(text.startswith("def parse") and len(text) == len("def parse") + 30 for text in texts)
    assert sample([*args, "--seed", "2"], capsys) != sample([*args, "--seed", "1"], capsys)


@pytest.mark.parametrize("args, message", [
    (["--prompt", "déf"], "characters ['é'] are not in the char vocabulary"),
    (["--prompt", ""], "--prompt is empty"),
    (["--prompt", "def", "--temperature", "-1"], "temperature must be a finite number >= 0"),
    (["--prompt", "def", "--top_k", "0"], "top_k must be >= 1"),
    (["--prompt", "def", "--max_new_tokens", "ten"], "argument --max_new_tokens: invalid int value"),
    (["--prompt", "def", "--num_samples", "0"], "--num_samples must be >= 1"),
])
def test_cli_bad_input(run, capsys, args, message):
    before = snapshot(run.parents[2])
    assert message in fit_error(["sample", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), *args], capsys)
    assert snapshot(run.parents[2]) == before


def test_cli_missing_checkpoint(tmp_path, capsys):
    line = fit_error(["sample", "--ckpt_path", str(tmp_path / "last.ckpt"), "--prompt", "def"], capsys)
    assert line == f"actsweep: error: --ckpt_path {tmp_path / 'last.ckpt'} does not exist"


def test_cli_settings_checked_before_the_checkpoint(tmp_path, capsys):
    # so a bad number loads no model and rebuilds no token cache
    line = fit_error(["sample", "--ckpt_path", str(tmp_path / "last.ckpt"), "--prompt", "def", "--top_k", "0"], capsys)
    assert "top_k must be >= 1" in line


def test_tokenizer_of_another_vocabulary_refused(run):
    checkpoint = load_checked(run / "checkpoints" / "last.ckpt")
    assert checkpoint_tokenizer(checkpoint).n_vocab == checkpoint["hyper_parameters"]["vocab_size"]
    checkpoint["hyper_parameters"]["vocab_size"] += 1
    with pytest.raises(ConfigError, match="its corpus changed since training"):
        checkpoint_tokenizer(checkpoint)
    with pytest.raises(ConfigError, match="records no data settings"):
        checkpoint_tokenizer({"hyper_parameters": checkpoint["hyper_parameters"]})
