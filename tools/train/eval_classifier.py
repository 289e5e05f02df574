#!/usr/bin/env python3
"""Mask / box AP of a MultiPathNet classifier with fovea itself, against two baselines that use
the same proposals and no classifier. Held-out split: coco-mini val2017 (79 images, the only
held-out part with COCO classes in a COCO instances file).

    python3 tools/train/eval_classifier.py --classifier weights/multipathnet.safetensors [--name shipped]

Everything goes through the CLI (`npx fovea segment|eval`, the C++ pipeline; run
`npm run build:ts` first if dist/ is stale); the outputs are kept in tools/train/runs/eval/mpn/.

* classifier: `npx fovea eval --gt GT --classifier FILE VAL` (instances mode: 100 proposals,
  class score >= 0.05, per-class NMS 0.3, 100 detections; the eval defaults of lib/cli-eval.ts);
* baseline "person": `npx fovea segment --classifier none --mode proposals --max-proposals 100
  --score-threshold 0 --nms-threshold 0.3 --coco P.json VAL`: the same 100 SharpMask proposals,
  class-agnostic NMS 0.3, every one labelled person (category 1, the most frequent training
  class), scored by objectness; evaluated with `npx fovea eval --gt GT --results P.json`;
* baseline "every class": the same detections repeated once for every category of the ground
  truth (score = objectness; scaling by a class prior would not change any per-class ranking,
  so this is also "objectness x class prior"). A classifier that learned only objectness and
  the class frequencies cannot beat it on per-class AP.

Each row is also scored on the person class alone (ground truth restricted to person).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
DS = os.path.normpath(os.path.join(REPO, "..", "shared", "fixtures", "datasets"))
GT = os.path.join(DS, "coco-mini", "annotations", "instances_val2017.json")
VAL = os.path.join(DS, "coco-mini", "val2017")
OUT = os.path.join(HERE, "runs", "eval", "mpn")


def sh(cmd: list, log: str = None) -> str:
    print("$ " + " ".join(os.path.relpath(c, REPO) if c.startswith(REPO) else c for c in cmd), flush=True)
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit(f"failed: {cmd}")
    if log:
        with open(log, "w") as f:
            f.write(r.stdout)
    return r.stdout


def stats(out: str) -> dict:
    d = json.loads(out[out.index("{"):])
    res = {}
    for t in d["tables"]:
        s = t["stats"]
        res[t["iouType"]] = dict(AP=s[0], AP50=s[1], AP75=s[2], AR100=s[8])
    res["detections"] = d["detections"]
    return res


def person_gt(path: str) -> str:
    g = json.load(open(GT))
    g = dict(g, annotations=[a for a in g["annotations"] if a["category_id"] == 1],
             categories=[c for c in g["categories"] if c["id"] == 1])
    json.dump(g, open(path, "w"))
    return path


def evaluate(results: str, gt_person: str) -> dict:
    a = stats(sh(["npx", "fovea", "eval", "--gt", GT, "--results", results, "--json"]))
    only = results[:-len(".json")] + ".person-only.json"  # fovea eval refuses unknown categories
    json.dump([d for d in json.load(open(results)) if d["category_id"] == 1], open(only, "w"))
    p = stats(sh(["npx", "fovea", "eval", "--gt", gt_person, "--results", only, "--json"]))
    return dict(all=a, person=p)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--name", default="classifier")
    ap.add_argument("--skip-baselines", action="store_true")
    a = ap.parse_args(argv)
    os.makedirs(OUT, exist_ok=True)
    gtp = person_gt(os.path.join(OUT, "gt-person.json"))
    rows = {}
    summary = os.path.join(OUT, "summary.json")
    if os.path.exists(summary):
        rows = json.load(open(summary))
    if not a.skip_baselines or "baseline-person" not in rows:
        prop = os.path.join(OUT, "baseline-person.json")
        sh(["npx", "fovea", "segment", "--classifier", "none", "--mode", "proposals", "--max-proposals", "100",
            "--score-threshold", "0", "--nms-threshold", "0.3", "--max-detections", "100", "--coco", prop,
            "--out", os.path.join(OUT, "segment-out"), VAL])
        rows["baseline-person"] = evaluate(prop, gtp)
        dets = json.load(open(prop))
        cats = sorted({x["category_id"] for x in json.load(open(GT))["annotations"]})
        every = [dict(d, category_id=c) for d in dets for c in cats]
        ev = os.path.join(OUT, "baseline-every-class.json")
        json.dump(every, open(ev, "w"))
        rows["baseline-every-class"] = evaluate(ev, gtp)
    # the classifier: fovea eval directly (the table's numbers), then the same detections
    # written by fovea segment for the person-only score
    full = stats(sh(["npx", "fovea", "eval", "--gt", GT, "--classifier", a.classifier, VAL, "--json"],
                    log=os.path.join(OUT, f"{a.name}-eval.json")))
    res = os.path.join(OUT, f"{a.name}.json")
    sh(["npx", "fovea", "segment", "--classifier", a.classifier, "--mode", "instances", "--score-threshold", "0.05",
        "--coco", res, "--out", os.path.join(OUT, "segment-out"), VAL])
    per = evaluate(res, gtp)
    rows[a.name] = dict(all=full, person=per["person"], all_from_segment=per["all"])
    json.dump(rows, open(summary, "w"), indent=1)
    print("\n| row | segm AP | segm AP50 | bbox AP | bbox AP50 | person segm AP | person bbox AP | detections |")
    print("|---|---|---|---|---|---|---|---|")
    for k, v in rows.items():
        A, P = v["all"], v["person"]
        print(f"| {k} | {A['segm']['AP']:.4f} | {A['segm']['AP50']:.4f} | {A['bbox']['AP']:.4f} | "
              f"{A['bbox']['AP50']:.4f} | {P['segm']['AP']:.4f} | {P['bbox']['AP']:.4f} | {A['detections']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
