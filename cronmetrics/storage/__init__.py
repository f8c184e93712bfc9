"""Job state and history, persistence and retention."""
