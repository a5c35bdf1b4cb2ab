"""Engine tests: the contract every registered engine passes (here), and each engine's own tests
in the subpackage named after it."""
