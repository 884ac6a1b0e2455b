"""The test suite's root: its folder is on ``sys.path`` (pytest's rootdir conftest), so
that every test module may import the shared helpers kept here (``pgtest``)."""
