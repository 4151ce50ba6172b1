#!/usr/bin/env python3
"""Show or amend the description (JSON header) of a delineate model file.

    scripts/model_header.py MODEL.dlm                  # print the header
    scripts/model_header.py MODEL.dlm --set operating_threshold=0.35 \
        --set operating_threshold_rule='"max recall at <= 1 FP/case, validation seed 303"'

`--set KEY=JSON` sets `training.KEY` (values are JSON). The weights are
copied unchanged; the file is replaced atomically. Layout (see
crates/model/src/modelfile.rs): 16-byte magic, little-endian u64 length,
JSON, weights.
"""

import argparse
import json
import os
import struct
import sys
import tempfile

MAGIC = b"DELINEATE-MODEL\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON")
    a = ap.parse_args()
    data = open(a.model, "rb").read()
    if data[:16] != MAGIC:
        sys.exit(f"{a.model}: not a delineate model file")
    (n,) = struct.unpack("<Q", data[16:24])
    info = json.loads(data[24:24 + n])
    weights = data[24 + n:]
    if not a.set:
        print(json.dumps(info, indent=1))
        return
    for kv in a.set:
        key, _, value = kv.partition("=")
        info.setdefault("training", {})[key] = json.loads(value)
    head = json.dumps(info, separators=(",", ":")).encode()
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(a.model)), suffix=".dlm")
    with os.fdopen(fd, "wb") as f:
        f.write(MAGIC + struct.pack("<Q", len(head)) + head + weights)
    os.chmod(tmp, 0o644)
    os.replace(tmp, a.model)
    print(json.dumps(info["training"], indent=1))


if __name__ == "__main__":
    main()
