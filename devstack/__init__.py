"""Local development stack: emulators and runners used by `make local` and the tests."""
