"""Engine tests: the contract every registered engine passes, and the classic engine's quality."""
