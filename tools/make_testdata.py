"""Cuts the committed excerpts in tests/testdata from the full annotation files.

Each excerpt keeps a file's layout byte for byte: the same JSON/JSONL structure and key order,
each kept video's entry (or line) exactly as in the full file, the full file's last-line
ending. The full JSON files are written by ``json.dumps`` with its defaults (checked here:
re-serialising a file gives its own bytes), so a dict of kept entries dumps to their original
text. Which videos are kept, and why, is in tests/testdata/README.md.

    python tools/make_testdata.py --source DIR    # DIR: the full files; default $HVT_SHARED_DATA
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

OUT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "testdata"


def _load_exact(path: pathlib.Path) -> dict:
  raw = path.read_text(encoding="utf-8")
  data = json.loads(raw)
  if json.dumps(data) != raw:
    raise ValueError(f"{path}: json.dumps does not give the file's bytes back; an excerpt "
                     "would change its layout")
  return data


def _first_of(data: dict, n: int) -> list[str]:
  return list(data)[:n]


def _in_file_order(data: dict, keep: list[str]) -> dict:
  keep = set(keep)
  return {k: v for k, v in data.items() if k in keep}


def _extremes(durations: dict[str, float]) -> list[str]:
  """Every video of the shortest and of the longest duration."""
  lo, hi = min(durations.values()), max(durations.values())
  return [v for v, d in durations.items() if d in (lo, hi)]


def activitynet(src: pathlib.Path) -> dict[str, dict]:
  ann = {s: _load_exact(src / f"{s}.json") for s in ("train", "val_1")}
  out = {}
  for split, first in (("train", 40), ("val_1", 24)):
    data = ann[split]
    past_end = [v for v, a in data.items() if any(e > a["duration"] for _, e in a["timestamps"])]
    keep = _first_of(data, first) + past_end[:5]
    keep += [v for v, a in data.items() if any(s >= e for s, e in a["timestamps"])]
    keep.append(max(data, key=lambda v: len(data[v]["sentences"])))
    keep += _extremes({v: a["duration"] for v, a in data.items()})
    keep += sorted(data, key=lambda v: -max(len(s) for s in data[v]["sentences"]))[:3]
    keep += [v for v, a in data.items() if any(not s.isascii() for s in a["sentences"])][:2]
    out[f"{split}.json"] = _in_file_order(data, keep)
  return out


def didemo(src: pathlib.Path) -> dict[str, dict]:
  out = {}
  for split, first in (("train", 30), ("val", 16), ("test", 16)):
    data = _load_exact(src / f"{split}_data_bwzhang.json")
    keep = _first_of(data, first) + [v for v, a in data.items()
                                     if any(s > e for s, e in a["times"])]
    out[f"{split}_data_bwzhang.json"] = _in_file_order(data, keep)
  return out


def tvr(src: pathlib.Path) -> tuple[list[str], dict]:
  """The val lines of the kept videos (all their queries, file order) and the video index."""
  text = (src / "tvr_val_release.jsonl").read_text(encoding="utf-8")
  raw = text.splitlines()
  lines = [json.loads(l) for l in raw]
  order = list(dict.fromkeys(l["vid_name"] for l in lines))
  keep = order[:20] + _extremes({l["vid_name"]: l["duration"] for l in lines})
  keep += [l["vid_name"] for l in lines if not l["desc"].isascii()]
  keep = set(keep)
  kept_lines = [r for l, r in zip(lines, raw) if l["vid_name"] in keep]
  if text.endswith("\n"):   # the full file's last line ends in a newline: so does the excerpt
    kept_lines.append("")
  index = _load_exact(src / "tvr_video2dur_idx.json")
  small = {split: (_in_file_order(videos, list(keep)) if split == "val" else
                   dict(list(videos.items())[:5]))
           for split, videos in index.items()}
  return kept_lines, small


def msrvtt(src: pathlib.Path) -> dict[str, str]:
  out = {}
  for name in ("train_list_jsfusion.txt", "val_list_jsfusion.txt"):
    text = (src / name).read_text(encoding="utf-8")
    lines = text.split("\n")
    out[name] = "\n".join(lines[:30]) + ("\n" if text.endswith("\n") else "")
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--source", default=os.environ.get("HVT_SHARED_DATA"),
                      help="directory of the full files (<dataset>/<file>, as in "
                           "tests/testdata); default $HVT_SHARED_DATA")
  parser.add_argument("--output", default=str(OUT), help="default: tests/testdata")
  args = parser.parse_args()
  if not args.source:
    parser.error("--source is required (or set HVT_SHARED_DATA)")
  src, out = pathlib.Path(args.source), pathlib.Path(args.output)
  files: dict[str, str] = {}
  for name, data in activitynet(src / "activitynet_captions").items():
    files[f"activitynet_captions/{name}"] = json.dumps(data)
  for name, data in didemo(src / "didemo").items():
    files[f"didemo/{name}"] = json.dumps(data)
  lines, index = tvr(src / "tvr")
  files["tvr/tvr_val_release.jsonl"] = "\n".join(lines)
  files["tvr/tvr_video2dur_idx.json"] = json.dumps(index)
  files["tvr/LICENSE"] = (src / "tvr" / "LICENSE").read_text(encoding="utf-8")   # MIT notice
  for name, text in msrvtt(src / "msrvtt").items():
    files[f"msrvtt/{name}"] = text
  for name, text in files.items():
    path = out / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"{name}: {len(text.encode()):,} bytes")


if __name__ == "__main__":
  main()
