"""privacy_lakehouse: a privacy-first medallion lakehouse on dbt, DuckDB and Delta Lake."""

__version__ = "0.1.0"
