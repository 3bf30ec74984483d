"""logship producer: tails files and publishes their new bytes, checkpointing after confirms."""
