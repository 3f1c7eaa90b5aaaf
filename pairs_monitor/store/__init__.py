"""The database: schema and migrations (``schema``), and the one writer thread (``writer``)."""
