"""Command-line tools: ``skiff`` (local cluster lifecycle); ``skiffctl`` comes later."""
