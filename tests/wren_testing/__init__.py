"""The test-helper package (tests/ is on pytest's pythonpath): the one tiny Wren config, plus one module per area."""


def tiny_config_kwargs(**overrides) -> dict:
    values = dict(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    values.update(overrides)
    return values


def tiny_moe_config_kwargs(**overrides) -> dict:
    values = tiny_config_kwargs(
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=48,
        num_shared_experts=1,
        num_hidden_layers=3,
        first_k_dense_layers=1,
    )
    values.update(overrides)
    return values


class HostSyncDetector:
    """Records ops that read a device value back to the host (on a GPU, a stall of the CPU until the queue drains).

    Run on CPU tensors it finds what would synchronise on an accelerator: `.item()`, `bool(tensor)`, `int(...)`
    (all `_local_scalar_dense`), and ops whose output size depends on the data (nonzero, masked_select,
    bincount, unique, repeat_interleave).
    """

    SYNCING_OPS = frozenset(
        {"_local_scalar_dense", "nonzero", "masked_select", "bincount", "unique", "_unique2", "unique_dim",
         "unique_consecutive", "repeat_interleave"}
    )  # fmt: skip

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        detector = self
        self.seen: list[str] = []

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func._schema.name.split("::")[-1] in detector.SYNCING_OPS:
                    detector.seen.append(str(func))
                return func(*args, **(kwargs or {}))

        self._mode = _Mode()

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)
