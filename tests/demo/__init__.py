"""Tests of the demo pieces: customers database, datasette plugin, upstream servers."""
