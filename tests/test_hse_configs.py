"""The paper's ablation arguments of the HSE retrieval configs (configs/hse/__init__.py) and
the family README's table of every paper result: each config and arguments it names builds
a config that the HSE model accepts."""

from __future__ import annotations

import importlib
import pathlib
import re

import pytest

from configs import hse as family
from configs.hse import activitynet_c3d, activitynet_inception, demo, didemo
from hvt_jax.families.hse import model as hse_model

REPO = pathlib.Path(__file__).resolve().parents[1]
RETRIEVAL = (activitynet_c3d, activitynet_inception, didemo, demo)


def _name(module) -> str:
  return module.__name__.rsplit(".", 1)[1]


@pytest.mark.parametrize("module", RETRIEVAL, ids=_name)
def test_without_drops_one_loss_term(module):
  """Supp. Table 1, "HSE w/o <term>": that term's weight is 0, the others stay 1."""
  for term in family.LOSS_TERMS:
    c = module.get_config(f"without={term}")
    assert {k: v for k, v in c.loss.weights.items()} == {
        t: 0.0 if t == term else 1.0 for t in family.LOSS_TERMS}
    hse_model.check_config(c)
  with pytest.raises(ValueError, match=r"without='recon'; valid: 'match_high'"):
    module.get_config("without=recon")


@pytest.mark.parametrize("module", RETRIEVAL, ids=_name)
def test_uniform_proposals(module):
  """Table 4, "HSE + UNIFORM": K uniform proposals, the weak low-level loss unless another
  is asked for, and no evaluator that needs the ground-truth segments."""
  c = module.get_config("uniform=3")
  assert (c.input.clip_source, c.input.num_uniform_clips, c.loss.low) == ("uniform", 3, "weak")
  assert not any(e.get("observe_first") for e in c.evals.values())
  hse_model.check_config(c)
  assert module.get_config("uniform=2,low=none").loss.low == "none"
  assert module.get_config("model=fse,uniform=2").loss.low == "none"
  with pytest.raises(ValueError, match="uniform=0"):
    module.get_config("uniform=0")


def _readme_results_commands() -> list[str]:
  """The ``configs/hse/<file>.py[:args]`` of the README's table of paper results."""
  text = (REPO / "hvt_jax" / "families" / "hse" / "README.md").read_text(encoding="utf-8")
  section = text.split("### Every result of the paper, and its command", 1)[1]
  section = section.split("\n#", 1)[0]
  rows = [line for line in section.splitlines() if line.startswith("| ")]
  return [m for row in rows for m in re.findall(r"`(configs/hse/\w+\.py(?::[^`]*)?)`", row)]


def test_every_paper_result_command_builds():
  commands = _readme_results_commands()
  assert len(commands) > 40
  for command in commands:
    path, _, arg = command.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    c = module.get_config(arg or None)
    if c.model.name in ("hse", "fse"):
      hse_model.check_config(c)
