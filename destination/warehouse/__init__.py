"""Rows of a warehouse query as a source: diffed run to run inside a database engine.

``spec`` reads a mapping file's ``source`` object, ``engines`` talks to DuckDB,
PostgreSQL, Spark SQL and other SQLAlchemy engines through per-engine SQL templates,
``snapshot`` keeps what the destination holds and computes the diff as SQL, and
``source`` turns the changes into events for the runner and records what was accepted.
"""
