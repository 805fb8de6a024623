"""What video retrieval (VR) has learned on the moments demo (README, HAMMER/FLAT demo).

The moments demo's queries name one action and one attribute (``data_prep/demo_moments.py``)
and the dataset metadata keeps each video's (action, attribute) per sentence. For each
query, this reads the model's VR ranking from the evaluator's ``tvr_submission.json`` and
counts, among its top-k retrieved videos other than the query's own, the fraction that hold
an event of the query's (action, attribute) pair, of its action, and of its attribute;
the base rate is the same fraction over all the other videos of the split. A VR head that
has learned the whole query ranks pair-holding videos far above the base rate; one that has
learned only the attribute (8 kinds) lifts "attribute" and leaves "action" (24 kinds) at
its base rate.

    python tools/moments_diagnostics.py --metadata DATA/demo_moments/1.0.0/metadata.json \\
        runs/demo/hammer/seed0/eval/val/tvr_submission.json [more submissions] [--top-k 10]

Prints one JSON line per submission file: {"file", "queries", "<kind>": percent,
"<kind>_base": percent} for kind in pair, action, attribute.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

KINDS = ("pair", "action", "attribute")


def vr_breakdown(events: dict[str, list[list[int]]], submission: dict,
                 top_k: int = 10) -> dict[str, float]:
  """Percent of the top-k retrieved other videos (and of all other videos: ``_base``) that
  hold the query's (action, attribute), its action, its attribute, averaged over queries.

  Args:
    events: video id -> [(action id, attribute id)] per sentence (metadata
      ``extra.events[split]``).
    submission: a ``tvr_submission.json`` (its ``video2idx`` and ``VR`` lists; desc_id
      ``<video id>#<sentence index>``).
    top_k: retrieved videos per query.

  Raises:
    KeyError: a query or a retrieved video that is not in ``events`` (another split).
  """
  idx2vid = {i: v for v, i in submission["video2idx"].items()}
  pairs = {v: {tuple(e) for e in ev} for v, ev in events.items()}
  holds = {"pair": lambda v, a, b: (a, b) in pairs[v],
           "action": lambda v, a, b: any(x == a for x, _ in pairs[v]),
           "attribute": lambda v, a, b: any(y == b for _, y in pairs[v])}
  top = {k: [] for k in KINDS}
  base = {k: [] for k in KINDS}
  for q in submission["VR"]:
    vid, _, n = q["desc_id"].rpartition("#")
    a, b = events[vid][int(n)]
    retrieved = [idx2vid[p[0]] for p in q["predictions"][:top_k]]
    retrieved = [v for v in retrieved if v != vid]
    others = [v for v in events if v != vid]
    for kind, fn in holds.items():
      top[kind].append(np.mean([fn(v, a, b) for v in retrieved]) if retrieved else 0.0)
      base[kind].append(np.mean([fn(v, a, b) for v in others]))
  out = {"queries": len(submission["VR"])}
  for kind in KINDS:
    out[kind] = round(100 * float(np.mean(top[kind])), 2)
    out[f"{kind}_base"] = round(100 * float(np.mean(base[kind])), 2)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("submissions", nargs="+", help="tvr_submission.json files")
  parser.add_argument("--metadata", required=True, help="the demo dataset's metadata.json")
  parser.add_argument("--split", default="val")
  parser.add_argument("--top-k", type=int, default=10)
  args = parser.parse_args()
  with open(args.metadata) as f:
    meta = json.load(f)
  try:
    events = meta["extra"]["events"][args.split]
  except KeyError:
    raise SystemExit(f"{args.metadata}: no extra.events.{args.split} (not a moments demo "
                     "dataset?)") from None
  for path in args.submissions:
    with open(path) as f:
      sub = json.load(f)
    print(json.dumps({"file": path, **vr_breakdown(events, sub, args.top_k)}), flush=True)


if __name__ == "__main__":
  main()
