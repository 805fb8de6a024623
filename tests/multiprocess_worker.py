"""One process of the two-process test (see test_multiprocess.py)."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax  # pylint: disable=g-import-not-at-top

jax.config.update("jax_cpu_collectives_implementation", "gloo")


def main():
  port, pid, data_dir, workdir, out = sys.argv[1:6]
  os.environ.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                    JAX_PROCESS_ID=pid)
  from hvt_jax import sharding, train  # pylint: disable=g-import-not-at-top
  from configs.hse import demo  # pylint: disable=g-import-not-at-top
  sharding.maybe_initialize_distributed()
  assert jax.process_count() == 2 and jax.device_count() == 8
  c = demo.get_config("runlocal")
  c.input.data_dir = data_dir
  c.checkpoint.asynchronous = False
  results = train.train_and_evaluate(c, workdir)
  with open(out, "w") as f:
    json.dump(results, f)


if __name__ == "__main__":
  main()
