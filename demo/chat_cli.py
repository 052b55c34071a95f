"""`wren chat [MODEL_OR_REPO] [--adapter DIR]`: open the Gradio chat demo."""

from ..paths import DEFAULT_OUTPUT_DIR, SMOLLM2_OUTPUT_DIR


def add_arguments(parser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        help=f"model folder, Hub repo id, or LoRA adapter folder (default: {SMOLLM2_OUTPUT_DIR} from `wren import "
        f"smollm2` when present, else {DEFAULT_OUTPUT_DIR} from `wren pretrain`)",
    )
    parser.add_argument("--adapter", help="LoRA adapter folder or Hub repo applied on top of the model")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument(
        "--share", choices=("no", "yes"), default="no", help="also open a public gradio.live link (default: no)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="generations served at once (default: 4)")


def run(args) -> int:
    from .loading import load_chat_model

    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1, got {args.concurrency}")
    model, tokenizer, label = load_chat_model(args.model, args.adapter)
    from .app import build_demo  # gradio takes seconds to import: only once the model loaded

    demo = build_demo(model, tokenizer, label=label, concurrency=args.concurrency)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share == "yes")
    return 0
