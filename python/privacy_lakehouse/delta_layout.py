"""How every Parquet file of the lake is laid out and fed, whoever writes it (models, erasure,
rotation).

Row groups of 122,880 rows, DuckDB's own row-group size: delta-rs otherwise buffers a row group
of about a million rows per open file before it encodes anything, which at the 10M benchmark
scale held hundreds of MB per concurrent write. Smaller groups also give finer min/max
statistics, which lets erasure and DuckDB skip more of a file.
"""

from __future__ import annotations

from deltalake import DeltaTable, WriterProperties

ROW_GROUP_ROWS = 122_880
# Rows per record batch streamed from DuckDB into delta-rs (the reader goes to delta-rs as it is,
# see delta_writer._batches). delta-rs holds several batches in flight while it encodes: with
# 100,000-row batches, writing the 1M bronze customers (about 820 bytes a row, mostly
# ciphertext) took 1.0 GB beyond DuckDB; with 16,384 rows, about 0.4 GB, and no slower
# (bench/README.md).
WRITE_BATCH_ROWS = 16_384
# File cap of tables clustered by subject token (unless a model sets its own): a subject's rows
# sit in few small files, so an erasure rewrites little.
CLUSTERED_FILE_BYTES = 16 * 1024 * 1024
# delta-rs writes Snappy by default, but any WriterProperties without a codec means uncompressed.
COMPRESSION = "SNAPPY"


def writer_properties() -> WriterProperties:
    return WriterProperties(max_row_group_size=ROW_GROUP_ROWS, compression=COMPRESSION)


def rows_added_by_latest_commit(table: DeltaTable) -> int:
    """Rows added by the table's latest commit (delta-rs records them in its commit info), for
    writers that hand DuckDB's reader to delta-rs without counting batches themselves."""
    latest = table.history(1)
    metrics = (latest[0].get("operationMetrics") or {}) if latest else {}
    return int(metrics.get("num_added_rows") or 0)
