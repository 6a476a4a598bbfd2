"""CLI sub-commands of the core: run, detect, label."""
