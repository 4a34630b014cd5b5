#!/usr/bin/env python3
"""Regenerates the ImageNet class lists shipped in ``keras_swinv2/data``.

Usage::

    pip download --no-deps timm -d /tmp/timmwheel   # or any timm >= 0.9 wheel
    python scripts/make_class_lists.py /tmp/timmwheel/timm-*.whl
    python scripts/make_class_lists.py /tmp/timmwheel            # unzipped wheel
    python scripts/make_class_lists.py /tmp/timmwheel --check    # compare only

SOURCE is a timm wheel (``.whl``), an unzipped wheel, or its
``timm/data/_info`` folder. Only these data files are read from it:

* ``imagenet_synsets.txt``: the 1000 ImageNet-1k synsets in the standard
  (sorted) class order.
* ``imagenet21k_goog_synsets.txt``: the 21843 ImageNet-21k (fall11) synsets,
  sorted, as Google's BiT release indexes them.
* ``imagenet_synset_to_lemma.txt``: ``synset<TAB>lemma`` for every synset.

Outputs (in ``--out``, default the package's ``keras_swinv2/data``):

* ``imagenet1k_classes.txt``: 1000 lines ``synset<TAB>lemma``.
* ``imagenet22k_classes.txt.gz``: 21841 lines ``synset<TAB>lemma`` in the
  order of Microsoft's Swin ImageNet-22k checkpoints, gzip-compressed.

The 22k order: Microsoft's ``data/imagenet22k_dataset.py`` says "total: 21843;
only 21841 class have images: map 21841->9205; 21842->15027". Two synsets of
the sorted 21843 (n03931044 at 9205, n09859684 at 15027) have no images; the
last two (n15102455, n15102894) take their indices and the list is cut to
21841. The result is checked against a known sha256.

Output is deterministic: UTF-8, ``\\n`` line ends, gzip with mtime 0 and no
file name in the header, so a rerun with the same wheel (and zlib) gives the
same bytes.
"""

import argparse
import gzip
import hashlib
import io
import os
import sys
import zipfile

INFO = "timm/data/_info/"
N_1K = 1000
N_21K_GOOG = 21843
N_22K = 21841
# (index in the sorted 21843, synset that has no images and is replaced there)
MOVES = {21841: (9205, "n03931044"), 21842: (15027, "n09859684")}
MOVED_SYNSETS = {21841: "n15102455", 21842: "n15102894"}
# sha256 of the 21841 synsets in Microsoft's order, one per line, "\n"-terminated.
SHA256_22K_SYNSETS = "34690268edc6c7b6ec23fa3dfe190da471081b92ff691ad6478ef9dd30c486df"

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "keras_swinv2", "data")


def _reader(source):
    """Returns ``read(name) -> str`` for a data file of the timm wheel at ``source``."""
    if os.path.isfile(source) and zipfile.is_zipfile(source):
        archive = zipfile.ZipFile(source)
        return lambda name: archive.read(INFO + name).decode("utf-8")
    for folder in (source, os.path.join(source, INFO)):
        if os.path.isfile(os.path.join(folder, "imagenet_synsets.txt")):

            def read(name, folder=folder):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    return f.read()

            return read
    raise SystemExit(f"{source}: not a timm wheel, unzipped wheel or timm/data/_info folder")


def _lines(text):
    return [line for line in text.splitlines() if line.strip()]


def build(read):
    """Returns ``{file name: bytes}`` for both outputs."""
    synsets_1k = _lines(read("imagenet_synsets.txt"))
    synsets_goog = _lines(read("imagenet21k_goog_synsets.txt"))
    lemmas = dict(line.split("\t", 1) for line in _lines(read("imagenet_synset_to_lemma.txt")))

    _expect(len(synsets_1k) == N_1K and len(set(synsets_1k)) == N_1K, f"{len(synsets_1k)} ImageNet-1k synsets")
    _expect(synsets_1k[0] == "n01440764", f"ImageNet-1k class 0 is {synsets_1k[0]}, not n01440764 (tench)")
    _expect(
        len(synsets_goog) == N_21K_GOOG
        and len(set(synsets_goog)) == N_21K_GOOG
        and synsets_goog == sorted(synsets_goog),
        f"{len(synsets_goog)} ImageNet-21k synsets, expected {N_21K_GOOG} unique and sorted",
    )
    synsets_22k = list(synsets_goog)
    for source, (target, vacated) in MOVES.items():
        _expect(synsets_goog[source] == MOVED_SYNSETS[source], f"entry {source} is {synsets_goog[source]}")
        _expect(synsets_goog[target] == vacated, f"entry {target} is {synsets_goog[target]}, expected {vacated}")
        synsets_22k[target] = synsets_goog[source]
    synsets_22k = synsets_22k[:N_22K]
    digest = hashlib.sha256("".join(s + "\n" for s in synsets_22k).encode("ascii")).hexdigest()
    _expect(digest == SHA256_22K_SYNSETS, f"22k synset list sha256 {digest}, expected {SHA256_22K_SYNSETS}")

    missing = [s for s in synsets_1k + synsets_22k if s not in lemmas]
    _expect(not missing, f"no lemma for {missing[:5]}")

    def table(synsets):
        return "".join(f"{s}\t{lemmas[s].strip()}\n" for s in synsets).encode("utf-8")

    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as f:
        f.write(table(synsets_22k))
    return {"imagenet1k_classes.txt": table(synsets_1k), "imagenet22k_classes.txt.gz": buffer.getvalue()}


def _expect(condition, message):
    if not condition:
        raise SystemExit(f"unexpected timm data: {message}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="timm wheel (.whl), unzipped wheel, or its timm/data/_info folder")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: keras_swinv2/data)")
    parser.add_argument(
        "--check", action="store_true", help="only compare with the files in --out; exit 1 if they differ"
    )
    args = parser.parse_args(argv)

    outputs = build(_reader(args.source))
    stale = []
    for name, data in outputs.items():
        path = os.path.join(args.out, name)
        current = open(path, "rb").read() if os.path.exists(path) else None
        if args.check:
            if current != data:
                stale.append(name)
            continue
        if current != data:
            with open(path, "wb") as f:
                f.write(data)
        print(f"{os.path.normpath(path)}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    if stale:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
