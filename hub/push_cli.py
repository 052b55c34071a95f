"""`wren push FOLDER --repo USER/NAME`: check a saved model or adapter folder and upload it to the Hub."""

from .push import push_folder


def add_arguments(parser) -> None:
    parser.add_argument("folder", help="a folder written by save_pretrained, `wren pretrain` or `wren finetune`")
    parser.add_argument("--repo", required=True, help="Hub repository id, USER/NAME (created when missing)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--token", help="Hub token with write access (default: HF_TOKEN or `hf auth login`)")
    parser.add_argument(
        "--base-model",
        help="Hub repo id of the base model: recorded in the model card; required for an adapter "
        "whose base is a local folder",
    )
    parser.add_argument("--license", help="license for the model card metadata (default: apache-2.0)")
    parser.add_argument("--revision", help="branch to push to (default: main)")
    parser.add_argument("--message", help="commit message")


def run(args) -> int:
    result = push_folder(
        args.folder,
        args.repo,
        token=args.token,
        private=args.private or None,
        base_model=args.base_model,
        license=args.license,
        revision=args.revision,
        commit_message=args.message,
    )
    check = result.check
    for warning in check.warnings:
        print(f"warning: {warning}")
    if check.skipped_folders:
        print(f"Not pushed (sub-folders are not part of the repository): {', '.join(check.skipped_folders)}")
    print(f"Checked {check.folder}: {check.kind}, weights in {', '.join(check.weight_files)}.")
    print(f"Pushed {len(result.files)} files to {result.repo_id} ({result.commit_url}).")
    return 0
