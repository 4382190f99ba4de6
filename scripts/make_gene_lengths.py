"""Build the packaged gene-length table from a GENCODE GTF.

Usage::

    python scripts/make_gene_lengths.py GTF OUT

The packaged ``src/sepal_tl/data/gene_lengths_gencode_v43_basic.tsv.gz`` was made with::

    python scripts/make_gene_lengths.py \\
        ../shared/data/annotations/gencode.v43.basic.annotation.gtf.gz \\
        src/sepal_tl/data/gene_lengths_gencode_v43_basic.tsv.gz

from ``gencode.v43.basic.annotation.gtf.gz`` (GENCODE release 43, GRCh38, Ensembl 109, basic
set, dated 2022-11-29; https://www.gencodegenes.org/human/release_43.html). Each row is one gene
(unversioned Ensembl id, the chrX copy for pseudoautosomal genes) with its merged exon length: the
bp covered by the union of the exons of all its transcripts. All chromosomes are kept, chrM
included. The output is a gzipped TSV whose first lines are ``#`` comments naming the source and
the command, followed by the columns ``gene_id, gene_id_version, gene_name, chrom, length``
(``--no-version`` drops ``gene_id_version``).
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
from pathlib import Path

from sepal_tl.pp._gene_lengths import gene_lengths_from_gtf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gtf", type=Path, help="GTF file (.gtf or .gtf.gz)")
    parser.add_argument("out", type=Path, help="output table (.tsv.gz)")
    parser.add_argument("--no-version", action="store_true", help="leave out the gene_id_version column")
    args = parser.parse_args(argv)

    table = gene_lengths_from_gtf(args.gtf)
    if args.no_version:
        table = table.drop(columns="gene_id_version")

    header = [
        f"# Merged exon length (bp) per gene, derived from {args.gtf.name}",
        "# (union of the exon intervals of all transcripts of the gene, all chromosomes incl. chrM;",
        "#  one row per unversioned gene id, first occurrence kept, i.e. the chrX copy of _PAR_Y genes).",
    ]
    if args.gtf.name.startswith("gencode.v43.basic"):
        header.append("# Source: GENCODE release 43 basic annotation, GRCh38 (Ensembl 109), dated 2022-11-29.")
    header.append(f"# Command: python scripts/make_gene_lengths.py {args.gtf.name} {args.out.name}")

    buf = io.StringIO()
    buf.write("\n".join(header) + "\n")
    table.to_csv(buf, sep="\t", index=False, lineterminator="\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the gzip bytes reproducible.
    with args.out.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(buf.getvalue().encode("utf-8"))
    print(f"wrote {len(table)} genes to {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
