"""logship consumer: appends shipped lines to the output file, exactly once, then acknowledges."""
