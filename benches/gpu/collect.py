"""Turns benches/gpu/run.sh's OUTDIR/rows.tsv into OUTDIR/gpu-<card>-<date>.json:
{"device", "date", "rows": [{"workload", "batch", "precision", "ours_ms", "pytorch_ms", "ratio"}]}
with ratio = pytorch_ms / ours_ms (above 1: the project is faster). A row whose side failed
keeps null times and ratio."""
import datetime
import json
import re
import sys

out = sys.argv[1]
device = open(f"{out}/device.txt").read().split(",")[0].strip()
rows = []
for line in open(f"{out}/rows.tsv"):
    name, batch, precision, ours, theirs = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
    o = float(ours) if ours else None
    t = float(theirs) if theirs else None
    rows.append(dict(workload=name, batch=int(batch), precision=precision, ours_ms=o, pytorch_ms=t,
                     ratio=round(t / o, 3) if o and t else None))
date = datetime.date.today().isoformat()
card = re.sub(r"[^A-Za-z0-9]+", "-", device).strip("-")
path = f"{out}/gpu-{card}-{date}.json"
json.dump(dict(device=device, date=date, rows=rows), open(path, "w"), indent=1)
for r in rows:
    print(f"{r['workload']:60s} b{r['batch']:<4d} ours {r['ours_ms']} ms, PyTorch {r['pytorch_ms']} ms, ratio {r['ratio']}")
print("wrote", path)
