"""`wren pull USER/NAME --out DIR`: download a model or adapter repository from the Hub and check it."""

from ..output_dir import add_force_argument
from .pull import pull


def add_arguments(parser) -> None:
    parser.add_argument("repo", help="Hub repository id, USER/NAME")
    parser.add_argument("--out", help="folder to download into (default: ./NAME)")
    add_force_argument(parser, "--out", resumable=True)
    parser.add_argument("--revision", help="branch, tag or commit (default: main)")
    parser.add_argument("--token", help="Hub token, for private repositories (default: HF_TOKEN or `hf auth login`)")


def run(args) -> int:
    check = pull(args.repo, args.out, revision=args.revision, token=args.token, force=args.force)
    for warning in check.warnings:
        print(f"warning: {warning}")
    print(f"Downloaded {args.repo} to {check.folder}: {check.kind}, {len(check.files)} files.")
    return 0
