"""Alembic migration environment for the nvmlab results database."""
