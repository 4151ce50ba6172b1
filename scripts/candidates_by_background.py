#!/usr/bin/env python3
"""Splits candidate sets (`delineate candidates`) by the background each
case was synthesised on, so that the lesion classifier's operating
threshold can be chosen on a brain it was not fitted on (issue 27;
docs/model-card.md, "A threshold validated on an unseen brain").

    scripts/candidates_by_background.py OUT HELD_OUT SET=DATA ...

SET is a candidates.json, DATA the dataset folder it was found on (each
case's lesions.json names its template). Cases drawn on HELD_OUT go to
OUT/val/candidates.json, the others to OUT/fit/candidates.json; case
names become FOLDER/CASE (FOLDER: the set's folder), as `delineate model
classifier` names cases of several sets.
"""
import collections
import json
import os
import sys


def main():
    out, held_out, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
    sets = {"fit": None, "val": None}
    count = collections.Counter()
    for pair in pairs:
        path, data = pair.split("=", 1)
        d = json.load(open(path))
        tag = os.path.basename(os.path.dirname(path))
        for c in d["cases"]:
            meta = json.load(open(os.path.join(data, c["case"], "lesions.json")))
            part = "val" if meta["template"] == held_out else "fit"
            count[(part, meta["template"])] += 1
            if sets[part] is None:
                sets[part] = {k: v for k, v in d.items() if k != "cases"}
                sets[part]["cases"] = []
            sets[part]["cases"].append(dict(c, case=f"{tag}/{c['case']}"))
    for part, s in sets.items():
        if s is None:
            sys.exit(f"no case for {part} (held out: {held_out})")
        os.makedirs(os.path.join(out, part), exist_ok=True)
        with open(os.path.join(out, part, "candidates.json"), "w") as f:
            json.dump(s, f)
    for (part, t), n in sorted(count.items()):
        print(f"{part}: {n} cases on {t}")


if __name__ == "__main__":
    main()
