"""Run every benchmark under bench/ and print one table (see bench/__init__.py)."""
from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

import bench


def discover() -> list[str]:
    # bench.gpu is the GPU acceptance run, a command of its own (python -m bench.gpu)
    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")
                  and m.name != "gpu")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes for a CPU smoke run")
    p.add_argument("--json", help="write all rows to this JSON file")
    p.add_argument("--only", action="append", help="run only these benchmark modules")
    a = p.parse_args(argv)
    names = a.only or discover()
    rows, failed = [], []
    for name in names:
        mod = importlib.import_module(f"bench.{name}")
        t0 = time.time()
        try:
            for r in mod.run(quick=a.quick):
                ref = r.get("reference")
                r["ratio"] = (r["value"] / ref) if ref else None
                r["bench"] = name
                rows.append(r)
        except Exception as e:  # one broken benchmark must not hide the others
            failed.append(name)
            print(f"[bench] {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
        print(f"[bench] {name} done in {time.time() - t0:.1f}s", file=sys.stderr)
    print(f"\n{'case':<58} {'distgan':>12} {'reference':>12} {'ratio':>8}  unit")
    for r in rows:
        ref = f"{r['reference']:.4g}" if r.get("reference") is not None else "-"
        ratio = f"{r['ratio']:.3f}" if r.get("ratio") is not None else "-"
        print(f"{r['case']:<58} {r['value']:>12.4g} {ref:>12} {ratio:>8}  {r.get('unit', '')}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
