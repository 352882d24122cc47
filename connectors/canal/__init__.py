"""The built-in ``canal`` connector: a MySQL/MariaDB change-data-capture source in the spirit of
Alibaba Canal. ``plugin`` registers it; ``config`` holds its config model; ``source`` is the
source (streaming and positions), ``snapshot`` the chunked initial snapshot, ``formats`` the
record formats (Canal FlatMessage, Debezium envelope, typed row), ``server`` the start checks
and schema cache, ``events`` the contract between the source and its binlog readers
(``binlog.LibraryReader`` on pymysqlreplication, ``fastbinlog.FastReader``).
"""
