"""The ``tidings`` command line: thin click commands wiring the layers together."""
