"""What the test suite and the benchmarks both drive: daphne and redis-server subprocesses, the lean
realtime device, the accounts it needs, and polling with a deadline. Plain code, no pytest: the
benchmarks import it as well as the tests (the pytest fixtures around it are in tests/)."""
