"""Size and compile time of the jitted init, with paper-sized GloVe vectors configured.

Pretrained weights (``config.init_from``, HSE's ``word_vectors.npy``) are loaded on the host
after init (``hvt_jax/pretrained.py``), so the init program carries no copy of them: its
size must not grow with the vectors. Prints the lowered StableHLO size, compile time and
the host-side load time.

  python benchmarks/bench_init.py [--vocab 10000] [--word-dim 300]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from configs.hse import activitynet_c3d  # pylint: disable=g-import-not-at-top,wrong-import-position
from data_prep import builder  # pylint: disable=g-import-not-at-top,wrong-import-position
from hvt_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position

PARSER = argparse.ArgumentParser(description=__doc__.splitlines()[0])
PARSER.add_argument("--vocab", type=int, default=10000)
PARSER.add_argument("--word-dim", type=int, default=300)
ARGS = PARSER.parse_args()


def tiny_dataset(out: str) -> str:
  rng = np.random.default_rng(0)
  vocab = ["<pad>", "<unk>"] + [f"w{i}" for i in range(ARGS.vocab - 2)]
  spec = builder.DatasetSpec(name="bench", modalities={"c3d": 500}, tokenizer="word",
                            vocab=vocab)

  def rec(i, split):
    return dict(video_id=f"{split}{i}", duration=10.0, split=split, label="",
                features={"c3d": rng.normal(size=(20, 500)).astype(np.float32)},
                timestamps={"c3d": np.stack([np.arange(20), np.arange(1, 21)], 1) * 0.5},
                segments=[[0.0, 5.0]], sentences=["a"], tokens=[[2, 3]])

  return builder.write_dataset(spec, {"train": [rec(i, "train") for i in range(64)],
                                     "val_1": [rec(i, "val_1") for i in range(8)]},
                              out, counter=builder.SkipCounter())


def main():
  with tempfile.TemporaryDirectory() as tmp:
    data_dir = tiny_dataset(tmp)
    vectors = np.random.default_rng(1).normal(size=(ARGS.vocab, ARGS.word_dim)).astype(
        np.float32)
    np.save(os.path.join(data_dir, "word_vectors.npy"), vectors)
    c = activitynet_c3d.get_config()
    c.input.data_dir = data_dir
    s = train.setup(c)
    lowered = jax.jit(train._init_fn(s), out_shardings=s.state_shardings).lower()  # pylint: disable=protected-access
    t = time.perf_counter()
    lowered.compile()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    state = train.init_state(s)
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t
    print(f"word vectors: {vectors.shape} float32 = {vectors.nbytes / 2**20:.1f} MiB")
    print(f"lowered init: {len(lowered.as_text()) / 2**20:.2f} MiB of StableHLO text")
    print(f"compile {compile_s:.1f} s; init + host-side GloVe load {init_s:.1f} s")


if __name__ == "__main__":
  main()
