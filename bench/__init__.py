"""`python -m bench.run`: logship's throughput, latency, CPU and memory beside references
measured in the same run (see bench/README.md)."""
