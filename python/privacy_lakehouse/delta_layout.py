"""How every Parquet file of the lake is laid out, whoever writes it (models, erasure, rotation).

Row groups of 122,880 rows, DuckDB's own row-group size: delta-rs otherwise buffers a row group
of about a million rows per open file before it encodes anything, which at the 10M benchmark
scale held hundreds of MB per concurrent write. Smaller groups also give finer min/max
statistics, which lets erasure and DuckDB skip more of a file.
"""

from __future__ import annotations

from deltalake import WriterProperties

ROW_GROUP_ROWS = 122_880
# delta-rs writes Snappy by default, but any WriterProperties without a codec means uncompressed.
COMPRESSION = "SNAPPY"


def writer_properties() -> WriterProperties:
    return WriterProperties(max_row_group_size=ROW_GROUP_ROWS, compression=COMPRESSION)
