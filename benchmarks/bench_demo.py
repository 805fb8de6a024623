"""Time to generate the synthetic demo datasets at their default sizes (records in memory,
before writing), per variant: the HSE/FSE demo (`data_prep.demo`), HAMMER/FLAT's moments
(`data_prep.demo_moments`) and MCHA's experts (`data_prep.demo_experts`).

    python benchmarks/bench_demo.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

from data_prep import demo, demo_experts, demo_moments

GENERATORS = {"hse": demo.generate_demo, "moments": demo_moments.generate,
              "experts": demo_experts.generate}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  for name, generate in GENERATORS.items():
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      out = generate()
      times.append(time.perf_counter() - t0)
    records = out.records if hasattr(out, "records") else out[1]   # data or (spec, records)
    videos = sum(len(r) for r in records.values())
    print(f"{name:8} {videos:5d} videos: best {min(times):.2f} s of {args.repeats} "
          f"({videos / min(times):.0f} videos/s)")


if __name__ == "__main__":
  main()
