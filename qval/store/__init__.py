"""Results store: Parquet parts written by workers, and one DuckDB file written by ingest alone."""
