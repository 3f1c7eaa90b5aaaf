"""The database: schema and migrations (``schema``), the one writer thread (``writer``) and
every SQL statement the daemon runs (``sql``)."""
