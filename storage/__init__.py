"""Results database: SQLAlchemy models, engines, migrations, ingest and export."""
