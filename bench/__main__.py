"""`python -m bench` (or `make bench`): every benchmark with its default settings, one after the other.

Each benchmark also runs on its own with its own options:
`python -m bench.model_bench --help`, `python -m bench.tokenizer_bench --help`.
"""

from . import model_bench, tokenizer_bench

if __name__ == "__main__":
    model_bench.main([])
    tokenizer_bench.main([])
