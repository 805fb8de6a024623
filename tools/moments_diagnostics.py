"""What video retrieval (VR) has learned on the moments demo (README, HAMMER/FLAT demo).

The moments demo's queries name one action and one attribute (``data_prep/demo_moments.py``)
and the dataset metadata keeps each video's (action, attribute) per sentence. For each
query, this reads the model's VR ranking from the evaluator's ``tvr_submission.json`` and
counts, among its first k retrieved videos other than the query's own, the fraction that hold
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
    ValueError: top_k < 1, or a query or retrieved video that is not in ``events`` (a
      submission of another split), or a file that is not a submission.
  """
  if top_k < 1:
    raise ValueError(f"top_k={top_k} must be >= 1")
  for key in ("video2idx", "VR"):
    if key not in submission:
      raise ValueError(f"not a tvr_submission.json: no {key!r}")
  if unknown := sorted(set(submission["video2idx"]) - set(events))[:3]:
    raise ValueError(f"videos {unknown} are not in the metadata's split")
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
    retrieved = [idx2vid[p[0]] for p in q["predictions"]]
    retrieved = [v for v in retrieved if v != vid][:top_k]
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
    try:
      with open(path) as f:
        out = vr_breakdown(events, json.load(f), args.top_k)
    except (OSError, ValueError) as e:
      raise SystemExit(f"{path} (split {args.split!r} of {args.metadata}): {e}") from None
    print(json.dumps({"file": path, **out}), flush=True)


if __name__ == "__main__":
  main()
