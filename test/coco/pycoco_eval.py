"""Reference side of test/coco-eval.test.ts: pycocotools on the same inputs.

Reads one JSON request on stdin and writes one JSON answer on stdout
(pycocotools' own progress output goes to stderr):

  {"evals": [{"gt": path, "results": path, "iouType": "segm"|"bbox",
              "useCats": bool, "maxDets": [a, b, c], "imgIds"?: [...]}, ...],
   "rles": [gt path, ...]}
  -> {"evals": [{"stats": [12 numbers], "summary": [12 lines]}, ...],
      "rles": [{"<ann id>": {"counts": str, "area": int}, ...}, ...]}

"evals" runs COCOeval.evaluate/accumulate/summarize; "rles" gives
COCO.annToRLE of every annotation of a ground-truth file.
Run: python3 test/coco/pycoco_eval.py < request.json
"""
import contextlib
import io
import json
import sys

from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def evaluate(job):
    gt = COCO(job["gt"])
    dt = gt.loadRes(job["results"])
    e = COCOeval(gt, dt, job["iouType"])
    e.params.useCats = int(job["useCats"])
    e.params.maxDets = job["maxDets"]
    if "imgIds" in job:
        e.params.imgIds = job["imgIds"]
    if "imgIds" in job:
        e.params.imgIds = job["imgIds"]
    e.evaluate()
    e.accumulate()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        e.summarize()
    return {"stats": [float(s) for s in e.stats], "summary": out.getvalue().splitlines()}


def rles(gt_path):
    gt = COCO(gt_path)
    res = {}
    for ann in gt.dataset["annotations"]:
        rle = gt.annToRLE(ann)
        counts = rle["counts"]
        res[str(ann["id"])] = {
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
            "area": int(mask_util.area(rle)),
        }
    return res


def main():
    request = json.load(sys.stdin)
    with contextlib.redirect_stdout(sys.stderr):
        answer = {
            "evals": [evaluate(job) for job in request.get("evals", [])],
            "rles": [rles(path) for path in request.get("rles", [])],
        }
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
