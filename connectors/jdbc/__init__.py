"""The ``jdbc`` connector: SQL databases through SQLAlchemy 2 (PostgreSQL, MySQL/MariaDB,
SQLite). The source polls tables or a query; the sink writes rows and applies the ``canal``
source's change records. See docs/connectors/jdbc.md."""
