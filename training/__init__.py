"""wrenlm.training: data pipeline, the shared Accelerate loop, `wren pretrain`, `wren finetune`, `wren eval`.

    from wrenlm.training import Trainer, TrainingConfig, PretrainConfig, run_pretraining
    from wrenlm.training import FinetuneConfig, run_finetuning, run_evaluation, wren_lora_config, load_adapter
    from wrenlm.training import DEFAULT_OUTPUT_DIR      # where `wren pretrain` saves the main job

Heavy modules (torch, datasets, accelerate) load on first attribute access.
"""

from ..lazy_exports import lazy_getattr
from .defaults import DEFAULT_OUTPUT_DIR, DEFAULT_PRESET, cache_dir

_LAZY = {
    "Trainer": "trainer",
    "TrainerCallback": "callbacks",
    "TrainState": "trainer",
    "MoeRouterCallback": "moe",
    "make_accelerator": "accelerator",
    "generate_text": "validation",
    "per_sequence_nll": "validation",
    "TrainingConfig": "config",
    "PretrainConfig": "config",
    "add_config_arguments": "config",
    "config_from_args": "config",
    "apply_overrides": "config",
    "CheckpointManager": "checkpointing",
    "latest_checkpoint": "checkpointing",
    "weight_decay_groups": "optim",
    "build_optimizer": "optim",
    "build_scheduler": "optim",
    "load_documents": "data",
    "split_documents": "data",
    "build_lm_datasets": "data",
    "collate_blocks": "data",
    "bits_per_character": "metrics.likelihood",
    "default_corpus_files": "corpus",
    "CorpusUnavailableError": "corpus",
    "run_pretraining": "pretrain",
    "FinetuneConfig": "finetune",
    "run_finetuning": "finetune",
    "run_evaluation": "evaluation",
    "wren_lora_config": "lora",
    "load_adapter": "lora",
}


__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "DEFAULT_OUTPUT_DIR",
    "DEFAULT_PRESET",
    "CheckpointManager",
    "CorpusUnavailableError",
    "FinetuneConfig",
    "MoeRouterCallback",
    "PretrainConfig",
    "TrainState",
    "Trainer",
    "TrainerCallback",
    "TrainingConfig",
    "add_config_arguments",
    "apply_overrides",
    "bits_per_character",
    "build_lm_datasets",
    "build_optimizer",
    "build_scheduler",
    "cache_dir",
    "collate_blocks",
    "config_from_args",
    "default_corpus_files",
    "generate_text",
    "latest_checkpoint",
    "load_adapter",
    "load_documents",
    "make_accelerator",
    "per_sequence_nll",
    "run_evaluation",
    "run_finetuning",
    "run_pretraining",
    "split_documents",
    "weight_decay_groups",
    "wren_lora_config",
]
