"""Run storage: the schema (file names, columns, statuses), run directory, manifest and sessions, resume, loading."""
