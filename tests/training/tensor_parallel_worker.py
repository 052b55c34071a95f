"""torchrun entry for the tensor-parallel gradient test.

    torchrun --nproc_per_node 2 tensor_parallel_worker.py OUT_DIR

For each tiny Wren (dense and MoE with a shared expert, each with and without qk_norm): build it with a seed,
keep a whole copy as the one-process reference, split it with `tensor_parallel_model` (the config's TP plan),
run the same batch through both in training mode (chunked LM loss over the sharded head, router losses) and
write, per rank, OUT_DIR/rankN.json: the losses, the largest gradient difference per parameter (sharded
gradients gathered with `full_tensor`), and the local and full shape of every parameter.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for wren_testing

import wrenlm
from wren_testing import tiny_config_kwargs, tiny_moe_config_kwargs  # after the thread count and the path
from wrenlm.training.tensor_parallel import tensor_parallel_model

CASES = {
    "dense": tiny_config_kwargs(),
    "dense_qk_norm": tiny_config_kwargs(qk_norm=True, loss_chunk_size=8),  # several loss chunks over the head
    "moe_shared": tiny_moe_config_kwargs(num_shared_experts=1),
    "moe_qk_norm_shared": tiny_moe_config_kwargs(qk_norm=True, num_shared_experts=1),
}


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    report = {}
    for name, kwargs in CASES.items():
        torch.manual_seed(0)
        reference = wrenlm.WrenForCausalLM(wrenlm.WrenConfig(**kwargs))
        model = tensor_parallel_model(reference, out / f"init-{name}")
        ids = torch.randint(0, reference.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
        losses = []
        for net in (model, reference):
            net.train()
            loss = net(input_ids=ids, labels=ids).loss
            loss.backward()
            losses.append(loss.item())
        grads, shapes = {}, {}
        for (key, param), (_, whole) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
            grad = param.grad.full_tensor() if hasattr(param.grad, "full_tensor") else param.grad
            grads[key] = float((grad - whole.grad).abs().max())
            local = param.to_local() if hasattr(param, "to_local") else param
            sharded = hasattr(param, "to_local")
            shapes[key] = {"local": list(local.shape), "full": list(param.shape), "sharded": sharded}
        report[name] = {"losses": losses, "grad_diff": grads, "shapes": shapes}
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
