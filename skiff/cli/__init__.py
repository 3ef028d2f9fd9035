"""Command-line tools: ``skiff`` (local cluster lifecycle) and ``skiffctl`` (kubectl-like)."""
