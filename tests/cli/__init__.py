"""Tests of regime_tasks/cli/: the regime command, its arguments, output and error contract."""
